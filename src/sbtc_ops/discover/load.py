"""Loading the effective settings: sbtc-ops' own layers over the signer deployment's.

The layers, lowest first; each sets what it names over the ones before it (README,
"Configuration", and docs/configuration.md list the same, tests/test_config_precedence.py
checks it):

1. the settings model's defaults;
2. the network preset: sbtc-registry deployer, stacks.endpoints, stacks.api_key_hosts, used
   only where no layer below sets them;
3. the discovered deployment: only when the caller asks, for a command run with no
   configuration (`load_for_command`); plain loading never looks for it and never asks Docker;
4. the signer's signer-config.toml (signer.config_path);
5. SIGNER_<SECTION>__<KEY> variables in signer.env_file;
6. SIGNER_* variables compose passes the signer's container (docker.compose_dir), compose
   service names replaced by the running containers' addresses;
7. SIGNER_* variables of this process's environment;
8. sbtc-ops.toml;
9. SBTC_OPS_<SECTION>__<KEY> variables;
10. the command's flags.

4 to 7 are the signer's configuration as the signer itself reads it, converted into sbtc-ops'
keys by host.signer_import; where its location is set (signer.*, docker.*) any layer above
may say.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops import redact
from sbtc_ops.config import (
    ENV_LAYER,
    NO_DISCOVERY_VARIABLE,
    Layer,
    Settings,
    build_settings,
    layer_of,
    merge_layers,
    own_layers,
    secret_values,
)
from sbtc_ops.discover.core import discover
from sbtc_ops.discover.resolve import signer_environment
from sbtc_ops.errors import ConfigError, SbtcOpsError
from sbtc_ops.host.compose import find_compose_files
from sbtc_ops.host.signer_import import EnvSource, import_signer, read_env_file

DISCOVERED_LAYER = "discovered deployment"
log = logging.getLogger("sbtc_ops.config")


@dataclass(frozen=True)
class DiscoveredDeployment:
    """What discovery found for a command run with no configuration: the settings layer and
    the compose project it came from (for the note the command prints)."""

    layer: dict[str, Any]
    compose_dir: str


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    discovered: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings from the layers above (`discovered`: layer 3, when the
    caller ran discovery); raises ConfigError naming file, key and problem (InvalidConfig,
    with every problem and its layer, when what was read is wrong). Deprecated keys read are
    logged as warnings."""
    environ = os.environ if environ is None else environ
    file_path, own = own_layers(config_path, overrides, environ)
    found: Layer = (DISCOVERED_LAYER, dict(discovered or {}))
    pre = merge_layers([found, *own])
    compose = _compose_env(pre, environ)
    config_file, env_file = _path(pre, "config_path"), _path(pre, "env_file")
    imported = import_signer(config_file, env_file, [*compose, EnvSource(ENV_LAYER, environ)])
    signer: Layer = (_signer_layer_name(config_file, env_file), imported.layer)
    layers = [found, signer, *own]
    settings = build_settings(layers, environ)
    if layer_of(("signer", "private_key"), layers) == signer[0]:
        settings.signer.record_key_source(imported.private_key_source)
    if file_path:
        settings.source_files.append(str(file_path))
    register_secrets(settings, {**(compose[0].variables if compose else {}), **environ})
    for note in settings.deprecations:
        log.warning("%s", note)
    return settings


def load_for_command(
    config_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, DiscoveredDeployment | None]:
    """Settings for a command (or a serve job): discovery first when nothing is configured."""
    environ = os.environ if environ is None else environ
    found = discover_unconfigured(config_path, overrides, environ)
    settings = load_settings(config_path, overrides, environ, found.layer if found else None)
    return settings, found


def discover_unconfigured(
    config_path: Path | None, overrides: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> DiscoveredDeployment | None:
    """With no sbtc-ops.toml and nothing else pointing at the deployment (signer.config_path,
    docker.compose_dir, db.url in any layer), find it the way `sbtc-ops init` does (current
    directory, running containers, standard paths). None when something is configured,
    SBTC_OPS_NO_DISCOVERY is set, or nothing usable is found."""
    if environ.get(NO_DISCOVERY_VARIABLE):
        return None
    file_path, own = own_layers(config_path, overrides, environ)
    pre = merge_layers(own)
    pointers = (("signer", "config_path"), ("docker", "compose_dir"), ("db", "url"))
    if file_path or any(_table(pre, table).get(key) for table, key in pointers):
        return None
    try:
        found = discover(environ=environ)
    except (SbtcOpsError, OSError):  # discovery is a convenience; a failure is "not found"
        return None
    if not found.found:
        return None
    return DiscoveredDeployment(found.settings_layer(), str(found.value("compose.dir")))


def register_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """Make every secret of these settings, and of the environment and the signer's env file,
    unprintable by this process (see sbtc_ops.redact)."""
    redact.register(*secret_values(settings))
    redact.register_environment(environ)
    env_file = settings.signer.env_file
    if env_file is not None:
        # Already read once by the signer import; a file gone since holds nothing to hide.
        with contextlib.suppress(ConfigError):
            redact.register_environment(read_env_file(env_file))


def _compose_env(pre: Mapping[str, Any], environ: Mapping[str, str]) -> list[EnvSource]:
    """The SIGNER_* variables compose gives the signer container, when docker.compose_dir is
    set: the secrets stay in the deployment's .env, sbtc-ops.toml only points at it."""
    docker = _table(pre, "docker")
    if not docker.get("compose_dir"):
        return []
    directory = Path(str(docker["compose_dir"]))
    files = [Path(str(f)) for f in docker.get("compose_files") or []]
    files = files or find_compose_files(directory)
    if not files:
        raise ConfigError(f"docker.compose_dir {directory}: no compose file in it")
    service = str(docker.get("signer_service") or "sbtc-signer")
    variables = signer_environment(directory, files, service, environ)
    return [EnvSource(f"compose project {directory}", variables)]


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


def _path(pre: Mapping[str, Any], key: str) -> Path | None:
    value = _table(pre, "signer").get(key)
    return Path(str(value)) if value else None


def _signer_layer_name(config_path: Path | None, env_file: Path | None) -> str:
    if config_path is not None:
        return f"the signer's configuration ({config_path})"
    if env_file is not None:
        return f"the signer's environment ({env_file})"
    return "the signer's environment (SIGNER_*)"
