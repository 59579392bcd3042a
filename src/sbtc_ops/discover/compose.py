"""A compose project as discovery reads it. The reader itself is sbtc_ops.host.compose (one
reader for the audit and discovery); its names stay importable here for discovery's modules."""

from __future__ import annotations

from sbtc_ops.host.compose import (
    PRIMARY_NAMES,
    Project,
    Service,
    find_compose_files,
    load_project,
    service_env,
)

SIGNER_CONFIG_TARGET = "/signer-config.toml"

__all__ = [
    "PRIMARY_NAMES",
    "SIGNER_CONFIG_TARGET",
    "Project",
    "Service",
    "find_compose_files",
    "load_project",
    "service_env",
]
