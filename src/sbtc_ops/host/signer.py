"""Facts about the signer deployment beside this host, shared by audit, serve and upgrade-check.

* the signer's configuration as the signer sees it: ``signer.config_path`` (TOML), then the
  ``SIGNER_*`` variables of ``signer.env_file`` and of the signer's compose service (env wins);
* the signer's image and the version it names (tag, else OCI label); the release-table
  judgement of it is sbtc_ops.signer.running;
* the endpoints the signer uses, as its container sees them (see host.endpoints);
* the registry's current signer data (``get-current-signer-data``);
* read-only queries on the signer database (``db.url`` or the signer's ``db_endpoint``), and
  the volumes holding its data and the backups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, LiteralString

import psycopg

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.host.compose import compose_files_if_configured, service_environment
from sbtc_ops.host.context import HostContext, parse_toml, url_password
from sbtc_ops.host.endpoints import HOST_VIEW, Endpoint, NetworkView, container_view, endpoints_of
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.roles import SIGNER, RoleService, image_tag, role_services, service_role
from sbtc_ops.host.signer_import import read_env_file
from sbtc_ops.stacks import SignerData, StacksError, read_signer_data

DB_CONNECT_TIMEOUT_S = 3
ENV_PREFIX = "SIGNER_"
PG_DATA = "/var/lib/postgresql/data"


# -- the signer's configuration -------------------------------------------------------------


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"signer": {"p2p": {"seeds": []}}} -> {"signer.p2p.seeds": []}; arrays are values."""
    flat: dict[str, Any] = {}
    for name, value in doc.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat


def env_keys(env: Mapping[str, str]) -> dict[str, str]:
    """SIGNER_SIGNER__P2P__SEEDS=… -> {"signer.p2p.seeds": "…"} (the config crate's mapping)."""
    keys: dict[str, str] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            path = name[len(ENV_PREFIX) :].lower().split("__")
            if all(path):
                keys[".".join(path)] = value
    return keys


@dataclass(frozen=True)
class SignerConfigView:
    """The effective signer configuration as flat dotted keys, and where each came from."""

    path: str | None
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # key -> "file" | env source

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def from_env(self, key: str) -> bool:
        return self.origin.get(key, "file") != "file"


def signer_config(ctx: HostContext) -> SignerConfigView:
    """The signer's configuration (memoised); Unavailable when neither a file nor env is set."""
    return ctx.memo("signerside.config", lambda: _read_config(ctx))


def _read_config(ctx: HostContext) -> SignerConfigView:
    path = ctx.settings.signer.config_path
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is not None:
        values = flatten(parse_toml(ctx.read_text(path), path))
        origin = dict.fromkeys(values, "file")
    for where, env in _signer_env_sources(ctx):
        for key, value in env_keys(env).items():
            values[key] = value
            origin[key] = where
    if not values:
        raise Unavailable(
            "the signer's configuration is not configured (signer.config_path, "
            "signer.env_file or the signer's compose service)"
        )
    return SignerConfigView(str(path) if path else None, values, origin)


def _signer_env_sources(ctx: HostContext) -> list[tuple[str, dict[str, str]]]:
    sources: list[tuple[str, dict[str, str]]] = []
    env_file = ctx.settings.signer.env_file
    if env_file is not None and ctx.exists(env_file):
        sources.append((f"env file {env_file}", read_env_file(ctx.host_path(env_file))))
    for compose in compose_files_if_configured(ctx):
        for name, service in compose.services.items():
            if service_role(name, service) == SIGNER:
                env = service_environment(service)
                sources.append((f"{compose.path} service {name}", env))
    return sources


# -- the endpoints the signer uses, as it sees them -----------------------------------------

# The signer's settings that name another service, and their config keys.
ENDPOINT_SETTINGS = {
    "SIGNER_STACKS__ENDPOINTS": "stacks.endpoints",
    "SIGNER_BITCOIN__RPC_ENDPOINTS": "bitcoin.rpc_endpoints",
    "SIGNER_SIGNER__DB_ENDPOINT": "signer.db_endpoint",
}


def signer_services(ctx: HostContext) -> list[RoleService]:
    """The compose services that run the signer (none when compose is not configured)."""
    try:
        return [s for s in role_services(ctx) if s.role == SIGNER]
    except Unavailable:
        return []


def signer_network_view(ctx: HostContext) -> NetworkView:
    """Where the signer resolves its endpoints: its compose container (network_mode), else
    (no signer service in compose: a host process) the host."""
    services = signer_services(ctx)
    if not services:
        return HOST_VIEW
    found = services[0]
    return container_view(found.name, _text(found.service.get("network_mode")))


def signer_endpoints(ctx: HostContext) -> list[Endpoint]:
    """Every endpoint of ENDPOINT_SETTINGS in the signer's configuration, as the signer sees
    it; Unavailable when the configuration is not known."""
    view = signer_network_view(ctx)
    config = signer_config(ctx)
    found: list[Endpoint] = []
    for setting, key in ENDPOINT_SETTINGS.items():
        value = config.get(key)
        items = value if isinstance(value, list) else [value] if value else []
        for item in items:
            found.extend(endpoints_of(setting, str(item), view))
    return found


def _text(value: Any) -> str | None:
    return str(value) if value else None


# -- the signer's image and the version it names --------------------------------------------

OCI_VERSION = '{{index .Config.Labels "org.opencontainers.image.version"}}'
_SBTC_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def signer_images(ctx: HostContext) -> list[str]:
    """The images of the signer's compose services (none when compose is not configured)."""
    return [s.image for s in signer_services(ctx) if s.image]


def _docker_images(ctx: HostContext) -> list[str]:
    try:
        result = ctx.run(["docker", "ps", "--format", "{{.Image}}"])
    except Unavailable:
        return []
    return result.stdout.split() if result.ok else []


def _label_version(ctx: HostContext, image: str) -> str | None:
    """The image's OCI version label (set by the release workflow), for digest-only pins."""
    try:
        result = ctx.run(["docker", "image", "inspect", "--format", OCI_VERSION, image])
    except Unavailable:
        return None
    label = result.stdout.strip()
    return label if result.ok and label and label != "<no value>" else None


def sbtc_version(text: str) -> tuple[int, ...] | None:
    """`signer-v1.3.0-debian` / `v1.3.0` / `1.3.0` → (1, 3, 0); None for anything else."""
    match = _SBTC_VERSION.fullmatch(text.removeprefix("signer-").removesuffix("-debian").strip())
    return tuple(int(part) for part in match.groups()) if match else None


def signer_image_version(ctx: HostContext) -> tuple[tuple[int, ...], str]:
    """(version numbers, where they were read) from the signer's image: compose, else the
    running containers; its tag, else its OCI version label. Unavailable when none names one."""
    images = signer_images(ctx)
    source = "compose image"
    if not images:
        images = [image for image in _docker_images(ctx) if "sbtc" in image]
        source = "docker ps"
    for image in images:
        tag = image_tag(image)
        version = sbtc_version(tag) if tag else None
        if version is not None:
            return version, f"{source} tag {tag}"
        label = _label_version(ctx, image)
        version = sbtc_version(label) if label else None
        if version is not None:
            return version, f"image label org.opencontainers.image.version={label}"
    if images:
        raise Unavailable(f"the signer image {images[0]!r} names no version (pin a release tag)")
    raise Unavailable("no sBTC signer image found (docker.compose_files or a running container)")


# -- the chain ------------------------------------------------------------------------------


def registry_signer_data(ctx: HostContext) -> SignerData:
    """get-current-signer-data from audit.stacks_node_url (else stacks.endpoints)."""
    return ctx.memo("signerside.registry", lambda: _read_registry(ctx))


def _read_registry(ctx: HostContext) -> SignerData:
    node = ctx.settings.audit.stacks_node_url
    try:
        reading = read_signer_data(ctx.settings, [node] if node else None)
    except StacksError as exc:
        raise Unavailable(f"cannot read the registry: {exc.message}") from None
    if reading.all_failed:
        errors = "; ".join(o.error or "" for o in reading.failed)
        raise Unavailable(f"no Stacks endpoint answered get-current-signer-data: {errors}")
    if reading.disagree:
        raise EvidenceError("the Stacks endpoints disagree on get-current-signer-data")
    agreed = reading.agreed
    if agreed is None:
        raise Unavailable("no registry signer data")
    return agreed


# -- the signer database --------------------------------------------------------------------


def db_url(ctx: HostContext) -> str:
    secret = ctx.settings.effective_db_url
    if secret is None:
        raise Unavailable("signer database not configured (db.url or the signer's db_endpoint)")
    return secret.get_secret_value()


def db_rows(
    ctx: HostContext, query: LiteralString, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Rows of one read-only query on the signer database; Unavailable when it cannot be
    reached."""
    url = db_url(ctx)
    password = url_password(url)
    if password:
        ctx.add_secret(password)  # a driver error may echo the connection string
    try:
        with psycopg.connect(url, connect_timeout=DB_CONNECT_TIMEOUT_S, autocommit=True) as conn:
            conn.execute("SET statement_timeout = 5000")  # a slow DB must not stall the reader
            conn.execute("SET default_transaction_read_only = on")
            return list(conn.execute(query, params).fetchall())
    except psycopg.errors.UndefinedTable as exc:
        raise EvidenceError(f"the signer database lacks a table: {_first_line(exc)}") from None
    except (psycopg.Error, SbtcOpsError) as exc:
        raise Unavailable(f"cannot query the signer database: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def data_volumes(ctx: HostContext) -> list[tuple[str, str]]:
    """(role, path) of the volumes holding the data and the backups."""
    found: list[tuple[str, str]] = []
    extra = ctx.settings.audit.db_data_path
    if extra:
        found.append(("database", str(extra)))
    for compose in compose_files_if_configured(ctx):
        for service in compose.services.values():
            for volume in service.get("volumes") or []:
                source, _, target = str(volume).partition(":")
                if target.split(":")[0].rstrip("/") == PG_DATA and source.startswith((".", "/")):
                    base = PurePosixPath(source)
                    path = base if base.is_absolute() else compose.directory / base
                    found.append(("database", str(path)))
    if ctx.settings.backup.local_dir is not None:
        found.append(("backups", str(ctx.settings.backup.local_dir)))
    return found


def volume_free(ctx: HostContext, path: str) -> tuple[str, int, int]:
    """(mount point, size, available bytes) of the volume holding `path` (`df`)."""
    where = PurePosixPath(path)
    # A backup directory not created yet will live on its nearest existing parent's volume.
    while not ctx.exists(where) and where != where.parent:
        where = where.parent
    result = ctx.run_ok(["df", "-B1", "--output=target,size,avail", str(where)])
    lines = result.stdout.strip().splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
        raise EvidenceError(f"cannot parse `df` output for {path}")
    return fields[0], int(fields[1]), int(fields[2])
