"""`sbtc-ops restore`: disaster recovery into a database the operator names.

Checksums first; decrypt on the fly; refuse a non-empty target unless --force; refuse the live
signer database unless --overwrite-live-db repeats its name.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.backup.archive import check_checksums, locate, prepare
from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.pgrestore import restore_argv, run_restore
from sbtc_ops.backup.sameserver import same_database
from sbtc_ops.backup.service import storages_for
from sbtc_ops.backup.source import ConnectionTarget, parse_target
from sbtc_ops.config import Settings
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.pg.binaries import find_binaries


@dataclass(frozen=True)
class RestoreRequest:
    backup_ref: str
    target_db: str
    locations: list[str] | None
    force: bool
    overwrite_live: str | None


def _same_database(a: ConnectionTarget, b: ConnectionTarget) -> bool:
    return same_database(a.params, b.params)


def _refuse_live(target: ConnectionTarget, settings: Settings, overwrite_live: str | None) -> None:
    live_url = settings.effective_db_url
    if live_url is None:
        return
    live = parse_target(live_url)
    if not _same_database(target, live):
        return
    dbname = str(live.params.get("dbname") or "")
    if overwrite_live != dbname:
        raise UsageError(
            f"{target.shown} is the live signer database from the configuration; refusing to "
            "restore into it",
            hint=f"if you really mean it (the signer must be stopped), add --overwrite-live-db {dbname}",
        )


def _user_tables(target: ConnectionTarget) -> int:
    with target.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchone()
    return int(row[0]) if row else 0


def _pg_major(version: str | None) -> int | None:
    if not version:
        return None
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def run_restore_command(settings: Settings, request: RestoreRequest) -> dict[str, Any]:
    target = parse_target(request.target_db, what="--target-db")
    _refuse_live(target, settings, request.overwrite_live)
    work_dir = Path(tempfile.mkdtemp(prefix="sbtc-ops-restore-"))
    try:
        located = locate(request.backup_ref, storages_for_restore(settings, request), work_dir)
        problems = check_checksums(located)
        if problems:
            raise SbtcOpsError(
                f"backup {located.ref} fails its checksum, nothing was restored: "
                + "; ".join(problems)
            )
        tables = _user_tables(target)
        if tables and not request.force:
            raise UsageError(
                f"{target.shown} is not empty ({tables} tables); nothing was restored",
                hint="restore into a new empty database, or add --force",
            )
        archive = prepare(located, work_dir, settings.backup.identity_file)
        manifest = located.manifest
        binaries = find_binaries(
            settings.postgres.bin_dir,
            min_major=_pg_major(manifest.pg_dump_version if manifest else None),
            tool_hint="pg_restore",
            need=("pg_restore", "psql"),
        )
        jobs = settings.backup.jobs if archive.format == "directory" else 1
        argv = restore_argv(
            binaries, archive, target.conninfo_without_password, jobs=jobs, strict=True
        )
        run = run_restore(argv, target.child_env)
        if not run.ok:
            detail = "; ".join(target.scrub(e) for e in run.errors[:5]) or f"exit {run.returncode}"
            raise SbtcOpsError(f"restore into {target.shown} failed: {detail}")
        return {
            "backup": located.backup_id or located.ref,
            "target": target.shown,
            "format": archive.format,
            "steps": archive.steps,
            "duration_s": round(run.duration_s, 3),
        }
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def storages_for_restore(settings: Settings, request: RestoreRequest) -> list[Any]:
    if Path(request.backup_ref).exists():
        return []
    if not is_backup_id(request.backup_ref):
        # Say what is wrong with BACKUP before complaining about missing locations.
        raise UsageError(
            f"{request.backup_ref!r} is neither an existing file or directory nor a backup id"
        )
    return storages_for(settings, request.locations)
