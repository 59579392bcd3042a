"""The signer's environment as its compose project gives it, made reachable from this host.

The compose reader itself is sbtc_ops.host.compose (one reader for audit and discovery)."""

from __future__ import annotations

from pathlib import Path

from sbtc_ops.discover.resolve import reachable_env, service_addresses
from sbtc_ops.errors import ConfigError
from sbtc_ops.host.compose import (
    PRIMARY_NAMES,
    Project,
    Service,
    find_compose_files,
    load_project,
    service_env,
)

# The project reader's names, for discovery's callers (discover.core imports them from here).
__all__ = [
    "PRIMARY_NAMES",
    "SIGNER_CONFIG_TARGET",
    "Project",
    "Service",
    "find_compose_files",
    "load_project",
    "service_env",
    "signer_environment",
]

SIGNER_CONFIG_TARGET = "/signer-config.toml"


def signer_environment(directory: Path, files: list[Path], service: str) -> dict[str, str]:
    """The SIGNER_* variables compose gives the signer's container (for load_settings), with
    compose host names replaced by the running containers' addresses (see resolve)."""
    project = load_project(directory, files)
    found = project.services.get(service)
    if found is None:
        raise ConfigError(
            f"docker.signer_service {service!r} is not a service of {', '.join(map(str, files))}"
        )
    env = {k: v for k, v in service_env(project, found).items() if k.startswith("SIGNER_")}
    return reachable_env(env, service_addresses(project))
