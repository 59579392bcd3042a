"""Evidence about the signer itself shared by the signer-config, dkg and database areas.

* the signer's configuration as the signer sees it: ``signer.config_path`` (TOML), then the
  ``SIGNER_*`` variables of ``signer.env_file`` and of the signer's compose service (env wins);
* the running release: ``audit.signer_version``, else the signer image's tag or OCI label
  (see releases.signer_version), else ``/info``'s ``build_info.git_revision`` matched against
  the release table's commits;
* the registry's current signer data (``get-current-signer-data``) and the Bitcoin tip;
* read-only queries on the signer database (``db.url`` or the signer's ``db_endpoint``).

Not an area: it defines no checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

from sbtc_ops.audit.compose import compose_files_if_configured, service_environment
from sbtc_ops.audit.framework import EvidenceError, HostContext, Skip, parse_toml
from sbtc_ops.audit.roles import SIGNER, service_role
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.host.signer_import import read_env_file
from sbtc_ops.signer.configkeys import env_keys, flatten
from sbtc_ops.signer.knowledge import HEAD, Knowledge, load, normalise_version
from sbtc_ops.stacks import SignerData

DB_CONNECT_TIMEOUT_S = 3


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
    """The signer's configuration (memoised); Skip when neither a file nor env is configured."""
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
        raise Skip(
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


# -- the running release --------------------------------------------------------------------


def running_version(ctx: HostContext) -> tuple[str, str]:
    """(version in the release table, how it was found); Skip when it cannot be told."""
    return ctx.memo("signerside.version", lambda: _running_version(ctx))


def _running_version(ctx: HostContext) -> tuple[str, str]:
    table = load()
    explicit = ctx.settings.audit.signer_version
    if explicit:
        return _in_table(table, str(explicit), "audit.signer_version")
    from sbtc_ops.audit.areas.releases import signer_version

    try:
        numbers, source = signer_version(ctx)
    except Skip as image_skip:
        return _from_build_info(ctx, table, str(image_skip))
    return _in_table(table, ".".join(str(n) for n in numbers[:3]), source)


def _from_build_info(ctx: HostContext, table: Knowledge, why_not_image: str) -> tuple[str, str]:
    from sbtc_ops.audit.areas.monitoring import signer_info

    try:
        info = signer_info(ctx)
    except (Skip, EvidenceError):
        raise Skip(f"signer version unknown: {why_not_image}; /info not readable") from None
    build = info.get("build_info")
    revision = str(build.get("git_revision") or "") if isinstance(build, dict) else ""
    release = table.by_commit(revision)
    if release is None:
        raise Skip(
            f"signer version unknown: {why_not_image}; /info build_info revision "
            f"{revision[:12] or '(empty)'} is no known release (set audit.signer_version)"
        )
    return release.version, f"/info build_info revision {revision[:12]}"


def _in_table(table: Knowledge, text: str, source: str) -> tuple[str, str]:
    version = normalise_version(text)
    if version is None:
        raise Skip(f"{source}: {text!r} is not a signer version (like v1.3.3)")
    if version in table.versions:
        return version, source
    newest = table.newest_release.version
    if _numbers(version) > _numbers(newest):
        return HEAD, f"{source} v{version}, newer than sbtc-ops' table (judged as HEAD)"
    raise Skip(f"{source}: signer v{version} is not in sbtc-ops' release table")


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# -- the chain ------------------------------------------------------------------------------


def registry_signer_data(ctx: HostContext) -> SignerData:
    """get-current-signer-data from audit.stacks_node_url (else stacks.endpoints)."""

    def compute() -> SignerData:
        from sbtc_ops.stacks import StacksError, read_signer_data

        node = ctx.settings.audit.stacks_node_url
        try:
            reading = read_signer_data(ctx.settings, [node] if node else None)
        except StacksError as exc:
            raise Skip(f"cannot read the registry: {exc.message}") from None
        if reading.all_failed:
            errors = "; ".join(o.error or "" for o in reading.failed)
            raise Skip(f"no Stacks endpoint answered get-current-signer-data: {errors}")
        if reading.disagree:
            raise EvidenceError("the Stacks endpoints disagree on get-current-signer-data")
        agreed = reading.agreed
        if agreed is None:
            raise Skip("no registry signer data")
        return agreed

    return ctx.memo("signerside.registry", compute)


def bitcoin_height(ctx: HostContext) -> int:
    from sbtc_ops.audit.areas.nodes import bitcoin_rpc

    blocks = bitcoin_rpc(ctx, "getblockchaininfo").get("blocks")
    if not isinstance(blocks, int) or isinstance(blocks, bool):
        raise EvidenceError("getblockchaininfo has no integer `blocks`")
    return blocks


# -- the signer database --------------------------------------------------------------------


def db_url(ctx: HostContext) -> str:
    secret = ctx.settings.effective_db_url
    if secret is None:
        raise Skip("signer database not configured (db.url or the signer's db_endpoint)")
    return secret.get_secret_value()


def db_rows(
    ctx: HostContext, query: LiteralString, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Rows of one read-only query on the signer database; Skip when it cannot be reached."""
    import psycopg

    from sbtc_ops.audit.framework import url_password

    url = db_url(ctx)
    password = url_password(url)
    if password:
        ctx.add_secret(password)  # a driver error may echo the connection string
    try:
        with psycopg.connect(url, connect_timeout=DB_CONNECT_TIMEOUT_S, autocommit=True) as conn:
            conn.execute("SET statement_timeout = 5000")  # a slow DB must not stall the audit
            conn.execute("SET default_transaction_read_only = on")
            return list(conn.execute(query, params).fetchall())
    except psycopg.errors.UndefinedTable as exc:
        raise EvidenceError(f"the signer database lacks a table: {_first_line(exc)}") from None
    except (psycopg.Error, SbtcOpsError) as exc:
        raise Skip(f"cannot query the signer database: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
