"""The running signer as sbtc-ops' knowledge reads it: its release (in the release table),
its DKG shares, its database size. Host facts (sbtc_ops.host) judged with the signer package's
tables; shared by the audit, serve's signer-check and upgrade-check."""

from __future__ import annotations

from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.nodes import signer_info
from sbtc_ops.host.signer import db_rows, signer_config, signer_image_version
from sbtc_ops.signer import dbfacts
from sbtc_ops.signer.dkgstate import DKG_ROWS_QUERY, DkgState, state_from_rows, verification_window
from sbtc_ops.signer.knowledge import HEAD, Knowledge, load, normalise_version

# -- the running release --------------------------------------------------------------------


def running_version(ctx: HostContext) -> tuple[str, str]:
    """(version in the release table, how it was found); Unavailable when it cannot be told.

    ``audit.signer_version``, else the signer image's tag or OCI label, else ``/info``'s
    ``build_info.git_revision`` matched against the release table's commits."""
    return ctx.memo("signerside.version", lambda: _running_version(ctx))


def _running_version(ctx: HostContext) -> tuple[str, str]:
    table = load()
    explicit = ctx.settings.audit.signer_version
    if explicit:
        return _in_table(table, str(explicit), "audit.signer_version")
    try:
        numbers, source = signer_image_version(ctx)
    except Unavailable as image_skip:
        return _from_build_info(ctx, table, str(image_skip))
    return _in_table(table, ".".join(str(n) for n in numbers[:3]), source)


def _from_build_info(ctx: HostContext, table: Knowledge, why_not_image: str) -> tuple[str, str]:
    try:
        info = signer_info(ctx)
    except (Unavailable, EvidenceError):
        raise Unavailable(f"signer version unknown: {why_not_image}; /info not readable") from None
    build = info.get("build_info")
    revision = str(build.get("git_revision") or "") if isinstance(build, dict) else ""
    release = table.by_commit(revision)
    if release is None:
        raise Unavailable(
            f"signer version unknown: {why_not_image}; /info build_info revision "
            f"{revision[:12] or '(empty)'} is no known release (set audit.signer_version)"
        )
    return release.version, f"/info build_info revision {revision[:12]}"


def _in_table(table: Knowledge, text: str, source: str) -> tuple[str, str]:
    version = normalise_version(text)
    if version is None:
        raise Unavailable(f"{source}: {text!r} is not a signer version (like v1.3.3)")
    if version in table.versions:
        return version, source
    newest = table.newest_release.version
    if _numbers(version) > _numbers(newest):
        return HEAD, f"{source} v{version}, newer than sbtc-ops' table (judged as HEAD)"
    raise Unavailable(f"{source}: signer v{version} is not in sbtc-ops' release table")


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# -- DKG shares -----------------------------------------------------------------------------


def dkg_state(ctx: HostContext) -> DkgState:
    """The signer database's dkg_shares rows (memoised)."""
    return ctx.memo("dkg.state", lambda: state_from_rows(db_rows(ctx, DKG_ROWS_QUERY)))


def window_of(ctx: HostContext) -> int:
    """The signer's dkg_verification_window (its default when the config is not known)."""
    try:
        return verification_window(signer_config(ctx).get("signer.dkg_verification_window"))
    except Unavailable:
        return verification_window(None)


# -- the database ---------------------------------------------------------------------------


def db_query(ctx: HostContext) -> dbfacts.Query:
    """dbfacts' queries run read-only on the signer database."""
    return lambda sql, params: db_rows(ctx, sql, params)


def database_size_bytes(ctx: HostContext) -> int:
    return ctx.memo("database.size", lambda: dbfacts.database_bytes(db_query(ctx)))
