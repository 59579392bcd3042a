"""The backups sbtc-ops' own settings name, listed once per audit: shared by the backups and
monitoring areas."""

from __future__ import annotations

from typing import Any

from sbtc_ops.audit.framework import EvidenceError, HostContext, Skip
from sbtc_ops.backup.service import list_all
from sbtc_ops.errors import SbtcOpsError


def backup_configured(ctx: HostContext) -> bool:
    return ctx.settings.backup.local_dir is not None or bool(ctx.settings.backup.s3.url)


def backup_rows(ctx: HostContext) -> list[dict[str, Any]]:
    """Every backup in the configured locations (newest first), listed once per audit."""
    if not backup_configured(ctx):
        raise Skip("no backup location configured (backup.local_dir / backup.s3.url)")
    return ctx.memo("backups.list", lambda: _list_backups(ctx))


def _list_backups(ctx: HostContext) -> list[dict[str, Any]]:

    try:
        # A configured directory not created yet holds no backup: the finding says so.
        return list_all(ctx.settings, None, missing_is_empty=True)
    except SbtcOpsError as exc:
        raise EvidenceError(f"cannot list backups: {exc}") from None
