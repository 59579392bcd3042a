"""Backups: daily, verified, encrypted, off-site, and holding the newest DKG shares.

Reads the configured backup locations (manifests) and the state database (verification
outcomes); BAK-005 also asks the live signer database for its newest DKG row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sbtc_ops.audit.backuplist import backup_rows
from sbtc_ops.audit.framework import (
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.backup.ids import backup_time
from sbtc_ops.backup.source import parse_target
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import isolation_of
from sbtc_ops.state import EventKind, StateStore

AREA = "backups"
SECTION = "Daily PostgreSQL backups, periodically verified"
MAX_BACKUP_AGE = timedelta(hours=26)
MAX_VERIFY_AGE = timedelta(days=8)


def _complete_full(ctx: HostContext) -> list[dict[str, Any]]:
    rows = [r for r in backup_rows(ctx) if r["state"] != "incomplete" and r["kind"] == "full"]
    return sorted(rows, key=lambda r: r["id"], reverse=True)


def _age(ctx: HostContext, backup_id: str) -> timedelta:

    return ctx.now - backup_time(backup_id)


@check(
    "BAK-001",
    area=AREA,
    title="A complete backup from the last 26 hours exists",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The signer database holds the encrypted DKG key shares; the page asks for a "
    "daily backup. 26 hours leaves room for a late daily run.",
    remediation="Run `sbtc-ops backup` now and schedule it daily (`sbtc-ops serve` or the "
    "systemd timer in deploy/).",
)
def recent_backup(ctx: HostContext) -> Outcome:
    complete = _complete_full(ctx)
    if not complete:
        return failed("no complete full backup in any configured location")
    newest = complete[0]
    age = _age(ctx, newest["id"])
    hours = age.total_seconds() / 3600
    if age > MAX_BACKUP_AGE:
        return failed(f"newest complete backup {newest['id']} is {hours:.0f} h old")
    return passed(f"newest complete backup {newest['id']} is {hours:.1f} h old")


@check(
    "BAK-002",
    area=AREA,
    title="The newest backup was verified, and a verification succeeded within 8 days",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A backup is only as good as its last successful restore: the page asks to "
    "verify backups by restoring them and comparing the aggregate key with the chain.",
    remediation="Run `sbtc-ops verify --latest` and fix what it reports.",
)
def verified_backup(ctx: HostContext) -> Outcome:

    complete = _complete_full(ctx)
    if not complete:
        raise Skip("no complete backup to have verified")
    attest = ctx.settings.attest
    signing = attest.signing_key is not None or attest.allowed_signers is not None
    unsigned: list[Any] = []
    with StateStore.open(ctx.settings.state_dir) as store:
        # Verifies that could not run (verdict "error") say nothing about a backup.
        events = [e for e in store.events(EventKind.VERIFY, limit=500) if e.outcome != "error"]
        if signing:
            # With signing configured, only a drill that left signed evidence counts.
            signed = {
                e.subject
                for e in store.events(EventKind.ATTESTATION, limit=500)
                if e.outcome == "signed" and e.data.get("verdict") == "match"
            }
            unsigned = [e for e in events if e.outcome == "ok" and e.subject not in signed]
            events = [e for e in events if e.outcome != "ok" or e.subject in signed]
    newest = complete[0]
    newest_event = next((e for e in events if e.subject == newest["id"]), None)
    newest_unsigned = next((e for e in unsigned if e.subject == newest["id"]), None)
    if newest_unsigned is not None and (
        newest_event is None or newest_unsigned.at >= newest_event.at
    ):
        return warned(
            f"{newest['id']} was verified, but that drill left no signed attestation "
            "(attest.signing_key is configured): its proof cannot be checked by another"
        )
    if newest_event is not None and newest_event.outcome != "ok":
        return failed(f"the last verification of {newest['id']} failed: {newest_event.outcome}")
    last_ok = next((e for e in events if e.outcome == "ok"), None)
    if last_ok is None:
        signed_only = " with a signed attestation (attest.signing_key)" if signing else ""
        return warned(f"no backup has ever been verified{signed_only}")
    age = ctx.now - datetime.fromtimestamp(last_ok.at, UTC)
    if age > MAX_VERIFY_AGE:
        return warned(f"the last successful verification was {age.days} days ago")
    if newest_event is None:
        return warned(
            f"the newest backup {newest['id']} is not verified yet "
            f"(last success {age.days} day(s) ago, of {last_ok.subject})"
        )
    evidence = " (signed attestation)" if signing else ""
    return passed(f"{newest['id']} verified ok{evidence}")


@check(
    "BAK-003",
    area=AREA,
    title="Backups are encrypted at rest",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A backup holds the signer's whole state; an unencrypted copy on a disk or in "
    "a bucket is one more place it can be read from.",
    remediation="List age recipients in backup.recipients; keep the identity off the host.",
)
def encrypted_backups(ctx: HostContext) -> Outcome:
    complete = _complete_full(ctx)
    if not ctx.settings.backup.recipients:
        return warned("backup.recipients is empty: new backups are not encrypted")
    if complete and not complete[0]["encrypted"]:
        return warned(f"newest backup {complete[0]['id']} is not encrypted")
    return passed("backups are encrypted with age")


@check(
    "BAK-004",
    area=AREA,
    title="An off-site copy is configured",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A backup on the signer's own disk is lost with the host.",
    remediation="Configure backup.s3 (any S3-compatible storage) next to backup.local_dir.",
)
def offsite_copy(ctx: HostContext) -> Outcome:
    if ctx.settings.backup.s3.url:
        return passed(f"backups are copied to {ctx.settings.backup.s3.url}")
    if ctx.settings.backup.local_dir is None:
        raise Skip("no backup location configured")
    return warned("backups are kept on this host only")


@check(
    "BAK-005",
    area=AREA,
    title="The newest DKG key shares are in a backup",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="New DKG shares exist in one place only until a backup holds them; they are "
    "the one part of the signer database that cannot be re-derived from the chains.",
    remediation="Run `sbtc-ops backup --dkg-only` now (seconds), and let `sbtc-ops serve` "
    "watch for new DKG rounds.",
)
def newest_dkg_backed_up(ctx: HostContext) -> Outcome:
    if ctx.settings.effective_db_url is None:
        raise Skip("no signer database configured")
    newest = ctx.memo("backups.live_dkg", lambda: _live_newest_dkg(ctx))
    if newest is None:
        return passed("the live database has no DKG row yet")
    key, created_at = newest
    backed_up = {
        k["aggregate_key"]
        for r in backup_rows(ctx)
        if r["state"] != "incomplete"
        for k in r.get("dkg_keys", [])
    }
    if key in backed_up:
        return passed(f"newest DKG key {key} is in a backup")
    minutes = (ctx.now - created_at).total_seconds() / 60
    return warned(f"newest DKG key {key} (created {minutes:.0f} min ago) is in no backup")


@check(
    "BAK-006",
    area=AREA,
    title="Restore drills run in a full sandbox",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A drill restores an archive an attacker may have written, on the host that "
    "holds the signer's key. Its programs must run as a uid of their own, in a filesystem "
    "view without the signer's or sbtc-ops' files, without network, in a PID namespace "
    "(docs/threat-model.md, the sandbox in each deployment).",
    remediation="Install bubblewrap (and uidmap with a /etc/subuid range for an unprivileged "
    "sbtc-ops), and deploy the shipped systemd unit or compose file unchanged; the last "
    "verify's warning names the missing layer.",
)
def drill_sandbox(ctx: HostContext) -> Outcome:

    with StateStore.open(ctx.settings.state_dir) as store:
        events = [e for e in store.events(EventKind.VERIFY, limit=50) if e.data.get("sandbox")]
    if events:
        layers, source = events[0].data["sandbox"], f"the last verify ({events[0].subject})"
    else:  # no verify recorded one yet: what a drill started by this process would get
        try:
            run_as = resolve_run_as(ctx.settings.postgres.run_as)
        except SbtcOpsError as exc:
            return failed(f"no user to run a drill as: {exc}")
        layers, source = isolation_of(run_as).as_dict(), "a drill from here"
    if layers.get("full"):
        return passed(f"{source} ran in a full sandbox ({layers.get('mode')})")
    missing = ", ".join(layers.get("missing", [])) or "unknown layers"
    return warned(f"{source} ran without {missing} ({layers.get('mode')}): {layers.get('why')}")


def _live_newest_dkg(ctx: HostContext) -> tuple[str, datetime] | None:

    db_url = ctx.settings.effective_db_url
    assert db_url is not None
    target = parse_target(db_url)
    with target.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT encode(aggregate_key, 'hex'), created_at FROM sbtc_signer.dkg_shares "
            "ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    return (str(row[0]), row[1]) if row else None
