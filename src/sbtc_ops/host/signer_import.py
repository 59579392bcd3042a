"""The signer's own configuration as sbtc-ops settings (the "signer" layer of loading).

The signer reads signer-config.toml overlaid by SIGNER_<SECTION>__<KEY> variables (its config
crate's convention); sbtc-ops reads it the same way, from the environments the caller gives,
lowest first (an env file, what compose passes the container, this process's environment),
and converts what it needs into sbtc-ops' own keys. Where the private key was found is
reported beside the layer: it is a fact about the deployment, not a setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.config import ConfigProblem, InvalidConfig, read_toml
from sbtc_ops.errors import ConfigError

SIGNER_ENV_PREFIX = "SIGNER_"
KEY_VARIABLE = "SIGNER_SIGNER__PRIVATE_KEY"
_SIGNER_NETWORKS = {"mainnet": "mainnet", "testnet": "testnet", "regtest": "devnet"}


@dataclass(frozen=True)
class SignerImport:
    """The settings layer derived from the signer's configuration, and where its private key
    was found (None when it holds none)."""

    layer: dict[str, Any]
    private_key_source: str | None = None


@dataclass(frozen=True)
class EnvSource:
    """SIGNER_* variables from one place: `origin` names it in messages ("environment",
    "env file /opt/signer/.env", "compose project /opt/sbtc")."""

    origin: str
    variables: Mapping[str, str]


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a docker-compose style .env file (KEY=VALUE, # comments, optional quotes)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file: {exc.strerror}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def import_signer(
    config_path: Path | None, env_file: Path | None, envs: Sequence[EnvSource]
) -> SignerImport:
    """sbtc-ops settings from the signer's config file overlaid by the SIGNER_* variables of
    `envs` (lowest first; signer.env_file, when given, is read below all of them)."""
    doc: dict[str, Any] = read_toml(config_path) if config_path else {}
    if env_file is not None:
        envs = [EnvSource(f"env file {env_file}", read_env_file(env_file)), *envs]
    origins = _apply_signer_env(doc, envs)
    if not doc:
        return SignerImport({})
    signer = _table(doc, "signer")
    layer: dict[str, Any] = {"signer": _signer_section(doc, config_path, env_file)}
    if signer.get("network"):
        layer["network"] = _network(str(signer["network"]), config_path)
    if signer.get("deployer"):
        layer["deployer"] = str(signer["deployer"])
    stacks = _table(doc, "stacks")
    if stacks.get("endpoints"):
        layer["stacks"] = {"endpoints": _as_list(stacks["endpoints"])}
    source = None
    if signer.get("private_key"):
        origin = origins.get(KEY_VARIABLE)
        source = f"{KEY_VARIABLE} ({origin})" if origin else f"{config_path} [signer] private_key"
    return SignerImport(layer, source)


def _signer_section(
    doc: dict[str, Any], config_path: Path | None, env_file: Path | None
) -> dict[str, Any]:
    signer = _table(doc, "signer")
    out: dict[str, Any] = {}
    if config_path:
        out["config_path"] = str(config_path)
    if env_file:
        out["env_file"] = str(env_file)
    for key in ("db_endpoint", "private_key"):
        if signer.get(key):
            out[key] = signer[key]
    if "bootstrap_signing_set" in signer:
        out["bootstrap_signing_set"] = _as_list(signer["bootstrap_signing_set"])
    if signer.get("prometheus_exporter_endpoint"):
        out["prometheus_exporter_endpoint"] = str(signer["prometheus_exporter_endpoint"])
    listen_on = _table(signer, "p2p").get("listen_on")
    if listen_on:
        out["listen_on"] = _as_list(listen_on)
    bind = _table(signer, "event_observer").get("bind")
    if bind:
        out["event_observer_bind"] = str(bind)
    rpc_endpoints = _table(doc, "bitcoin").get("rpc_endpoints")
    if rpc_endpoints:
        out["bitcoin_rpc_endpoints"] = _as_list(rpc_endpoints)
    return out


def _network(name: str, config_path: Path | None) -> str:
    network = _SIGNER_NETWORKS.get(name)
    if network is None:
        where = str(config_path) if config_path else "SIGNER_SIGNER__NETWORK"
        message = f"{name!r} is not one of mainnet, testnet, regtest"
        problem = ConfigProblem(where, "signer.network", message)
        raise InvalidConfig(f"{where}: signer.network = {message}", [problem])
    return network


def _table(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _apply_signer_env(doc: dict[str, Any], envs: Sequence[EnvSource]) -> dict[str, str]:
    """Overlay SIGNER_<SECTION>__<KEY> variables onto the signer config, later sources over
    earlier ones; returns {variable used: origin of the value that won}."""
    origins: dict[str, str] = {}
    for source in envs:
        for name, value in source.variables.items():
            if name.startswith(SIGNER_ENV_PREFIX) and "__" in name and _set(doc, name, value):
                origins[name] = source.origin
    return origins


def _set(doc: dict[str, Any], name: str, value: str) -> bool:
    path = [part.lower() for part in name[len(SIGNER_ENV_PREFIX) :].split("__")]
    node = doc
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        node = child
    node[path[-1]] = _parse_env_value(value)
    return True


def _parse_env_value(value: str) -> Any:
    # The signer's config crate parses lists from comma-separated env values.
    if "," in value and not value.startswith(("postgres", "http")):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]
