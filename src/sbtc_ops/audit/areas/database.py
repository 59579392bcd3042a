"""The signer database: size, growth and free space, vacuum, and schema version vs the image.

The signer never deletes rows and `stacks_blocks` grows with every Stacks block; slow queries
on it have taken signers "effectively offline" (stacks-sbtc/sbtc #2041; #1888, #1817, #1589).
Upgrades migrate the database automatically (`--migrate-db`), so the applied migrations
(`public.__sbtc_migrations`) must be exactly those of the running image (#1670/#1761).
DB-001 (role) and DB-002 (pg_hba trust) live in the access area.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

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
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.host.signer import PG_DATA, data_volumes, volume_free
from sbtc_ops.signer import dbfacts
from sbtc_ops.signer.knowledge import load
from sbtc_ops.signer.running import database_size_bytes, db_query, running_version

AREA = "database"
SECTION = "Signer database healthy, sized and on the running image's schema"

GB = 1000**3
# The sBTC signer page asks 50 GB of storage for the signer (docs.stacks.co/operate/
# run-a-sbtc-signer, "Minimum System Requirements"): warn at 80 % of it.
SIZE_WARN_BYTES = 40 * GB
DAYS_WARN, DAYS_FAIL = 30.0, 7.0
DEAD_FRACTION_WARN = 0.2
DEAD_ROWS_MIN = 10_000
VACUUM_STALE_S = 7 * 86400


def _relations(ctx: HostContext) -> list[dbfacts.Relation]:
    return ctx.memo("database.relations", lambda: dbfacts.relations(db_query(ctx)))


def _mb(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


@check(
    "DB-003",
    area=AREA,
    title="Database size and its largest tables",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The signer never deletes rows; stacks_blocks alone made signers effectively "
    "offline (sbtc #2041). The sBTC signer page budgets 50 GB of storage for the signer.",
    remediation="Plan storage before 50 GB; follow sbtc #2041/#2042 (stacks_blocks to be "
    "dropped) and upgrade when it ships; keep autovacuum on (DB-005).",
)
def database_size(ctx: HostContext) -> Outcome:
    size = database_size_bytes(ctx)
    top = _relations(ctx)[:5]
    data: dict[str, Any] = {
        "database_bytes": size,
        "largest": [{"table": r.name, "bytes": r.total_bytes, "rows": r.live_rows} for r in top],
    }
    listed = ", ".join(f"{r.name} {_mb(r.total_bytes)}" for r in top)
    text = f"database {_mb(size)}; largest: {listed or 'no tables'}"
    if size >= SIZE_WARN_BYTES:
        return warned(text + f" (over {SIZE_WARN_BYTES // GB} GB of the 50 GB budget)", **data)
    return passed(text, **data)


@check(
    "DB-004",
    area=AREA,
    title="Database growth leaves the data and backup volumes room",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A full volume stops PostgreSQL and with it the signer; first syncs and "
    "back-fills grow the database fast (sbtc #1817, #1589). Growth is measured over the sizes "
    "sbtc-ops recorded (every audit and serve run adds one).",
    remediation="Grow the volume, move backups to their own volume, tighten backup retention; "
    "set audit.db_data_path to the PostgreSQL data directory if it is not found from compose.",
)
def growth_and_free_space(ctx: HostContext) -> Outcome:
    size = database_size_bytes(ctx)
    now = ctx.now.timestamp()
    state_dir = ctx.settings.state_dir
    # A state directory that cannot be written (a read-only audit) still has its history.
    with contextlib.suppress(OSError, sqlite3.Error, SbtcOpsError):
        dbfacts.record_size(state_dir, now, size)
    per_day = dbfacts.growth_per_day(dbfacts.size_history(state_dir), now)
    volumes = data_volumes(ctx)
    data: dict[str, Any] = {"database_bytes": size, "growth_bytes_per_day": per_day}
    if not volumes:
        raise Skip(
            "no volume to judge (audit.db_data_path, a compose bind mount of "
            f"{PG_DATA}, or backup.local_dir); growth {_rate(per_day)}"
        )
    seen: dict[str, dict[str, Any]] = {}
    for role, path in volumes:
        target, total, avail = volume_free(ctx, path)
        entry = seen.setdefault(target, {"roles": [], "size": total, "avail": avail})
        entry["roles"].append(role)
        entry["days_until_full"] = dbfacts.days_until_full(avail, per_day)
    data["volumes"] = seen
    return _judge_volumes(seen, per_day, data)


def _rate(per_day: float | None) -> str:
    return "unknown yet (needs samples an hour apart)" if per_day is None else f"{_mb(per_day)}/day"


def _judge_volumes(
    seen: dict[str, dict[str, Any]], per_day: float | None, data: dict[str, Any]
) -> Outcome:
    parts, worst = [], None
    for target, entry in seen.items():
        days = entry["days_until_full"]
        roles = "+".join(entry["roles"])
        when = "not filling" if days is None else f"full in {days:.0f} days"
        parts.append(f"{roles} on {target}: {_mb(entry['avail'])} free, {when}")
        if days is not None and (worst is None or days < worst):
            worst = days
    text = f"growth {_rate(per_day)}; " + "; ".join(parts)
    if worst is not None and worst < DAYS_FAIL:
        return failed(text, **data)
    if worst is not None and worst < DAYS_WARN:
        return warned(text, **data)
    return passed(text, **data)


@check(
    "DB-005",
    area=AREA,
    title="Big tables are vacuumed: few dead tuples",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="bitcoin_blocks.is_canonical is rewritten on every new tip (UPDATEs leave dead "
    "tuples); bloated tables slow the signer's recursive chain queries (sbtc #1888).",
    remediation="Check autovacuum is on (SHOW autovacuum) and not blocked by a long "
    "transaction; run VACUUM (ANALYZE) on the listed tables.",
)
def dead_tuples(ctx: HostContext) -> Outcome:
    now = ctx.now.timestamp()
    bloated: list[dict[str, Any]] = []
    texts: list[str] = []
    for rel in _relations(ctx)[:10]:
        if rel.dead_rows >= DEAD_ROWS_MIN and rel.dead_fraction >= DEAD_FRACTION_WARN:
            never = rel.last_vacuum is None or now - rel.last_vacuum > VACUUM_STALE_S
            when = "never vacuumed" if rel.last_vacuum is None else "last vacuumed"
            texts.append(f"{rel.name} {rel.dead_rows} dead ({rel.dead_fraction:.0%}, {when})")
            bloated.append(
                {
                    "table": rel.name,
                    "dead": rel.dead_rows,
                    "fraction": round(rel.dead_fraction, 3),
                    "stale_vacuum": never,
                }
            )
    if bloated:
        return warned("; ".join(texts), tables=bloated)
    return passed("no large table has more than 20 % dead tuples")


@check(
    "DB-006",
    area=AREA,
    title="Applied migrations are exactly the running image's",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Each image applies its migrations at start (--migrate-db). A database behind "
    "the image did not migrate; one ahead was migrated by a newer image (a downgrade the older "
    "signer does not understand); unknown names are migrations no known release ships. Before "
    "v1.1.0 a failed migration could be recorded as applied (sbtc #1670/#1761).",
    remediation="Behind: restart the signer with --migrate-db and read its log. Ahead: run the "
    "image that migrated it, or restore the backup taken before the upgrade. Unknown: compare "
    "with signer/migrations/ of the image's tag.",
)
def schema_version(ctx: HostContext) -> Outcome:
    version, source = running_version(ctx)
    table = load()
    expected = list(table.migrations_at(version))
    applied = dbfacts.applied_migrations(db_query(ctx))
    every = set(table.migrations_at("HEAD"))
    behind = [m for m in expected if m not in applied]
    ahead = [m for m in applied if m in every and m not in expected]
    unknown = [m for m in applied if m not in every]
    data: dict[str, Any] = {
        "version": version,
        "version_source": source,
        "applied": len(applied),
        "expected": len(expected),
        "behind": behind,
        "ahead": ahead,
        "unknown": unknown,
    }
    newest = applied[-1] if applied else "none"
    if behind or ahead:
        parts = []
        if behind:
            parts.append(f"behind signer v{version} by {', '.join(behind)}")
        if ahead:
            parts.append(f"ahead of signer v{version} with {', '.join(ahead)}")
        return failed("; ".join(parts), **data)
    if unknown:
        return warned(f"unknown migrations applied: {', '.join(unknown)}", **data)
    return passed(f"{len(applied)} migrations, newest {newest}, as signer v{version}", **data)
