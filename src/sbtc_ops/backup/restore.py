"""`sbtc-ops restore`: disaster recovery into a database the operator names.

What writes the target once the drill has proven the archive (verify/gate.py, the command's
entry point, stages, checks and prepares it first). The live signer database is refused unless
--overwrite-live-db repeats its name. The target must exist (or --create makes it) and hold
nothing the backup would collide with: a database that already has the backup's schemas is
refused unless --clean (drop exactly the objects the archive contains, then restore), and any
other non-empty database unless --force. When pg_restore can run as one transaction (one job:
custom, tar, or directory restored with one job), a failure leaves the target unchanged and
the message says so. Afterwards: what the target now holds (tables, rows, newest DKG key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from sbtc_ops.backup.archive import PreparedArchive
from sbtc_ops.backup.pgrestore import RestoreRun, restore_argv, run_restore
from sbtc_ops.backup.sameserver import same_database
from sbtc_ops.backup.source import SIGNER_SCHEMA, ConnectionTarget, parse_target
from sbtc_ops.config import Settings
from sbtc_ops.errors import DependencyError, SbtcOpsError, UsageError
from sbtc_ops.pg.binaries import find_binaries
from sbtc_ops.pg.libpq import client_invocation
from sbtc_ops.pg.runas import current_user
from sbtc_ops.pg.sandbox import Sandbox


@dataclass(frozen=True)
class RestoreRequest:
    backup_ref: str
    target_db: str
    locations: list[str] | None
    force: bool
    overwrite_live: str | None
    create: bool = False
    clean: bool = False


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


def preflight(settings: Settings, request: RestoreRequest) -> ConnectionTarget:
    """The checks that need no archive: the target parses and is not the live database."""
    target = parse_target(request.target_db, what="--target-db")
    _refuse_live(target, settings, request.overwrite_live)
    return target


@dataclass(frozen=True)
class ProvenArchive:
    """A checked, prepared archive and what its backup says about it."""

    archive: PreparedArchive
    backup: str  # its id, or the path it was named by
    expected_rows: dict[str, int] | None  # the manifest's row counts
    dump_version: str | None  # the pg_dump that wrote it (the pg_restore needed)


def restore_prepared(
    settings: Settings, request: RestoreRequest, target: ConnectionTarget, proven: ProvenArchive
) -> dict[str, Any]:
    """Restore a checked, prepared archive into the target (created, cleaned, refused as
    the request says); what the target holds afterwards."""
    archive = proven.archive
    if request.clean and archive.format == "plain":
        raise UsageError(
            "--clean needs a custom, directory or tar archive (pg_restore lists what it "
            "contains); this is a plain SQL dump; nothing was restored",
            hint="restore it into a new database with --create",
        )
    binaries = find_binaries(
        settings.postgres.bin_dir,
        min_major=_pg_major(proven.dump_version),
        tool_hint="pg_restore",
        need=("pg_restore", "psql"),
    )
    run, atomic, created = _restore_into(target, binaries, archive, request, settings.backup.jobs)
    return {
        "backup": proven.backup,
        "target": target.shown,
        "format": archive.format,
        "steps": archive.steps,
        "duration_s": round(run.duration_s, 3),
        "created": created,
        "cleaned": request.clean,
        "single_transaction": atomic,
        "summary": restored_summary(target, proven.expected_rows),
    }


def _restore_into(
    target: ConnectionTarget,
    binaries: Any,
    archive: PreparedArchive,
    request: RestoreRequest,
    jobs: int,
) -> tuple[RestoreRun, bool, bool]:
    """(the restore, whether it was one transaction, whether --create made the database);
    a failed or interrupted restore drops the database it created."""
    # The operator's own credentials (pgpass, service files) reach the target: the
    # clients run as the invoking user, in a process group of their own, with only the
    # libpq environment (psql replays plain SQL restricted all the same).
    sandbox = Sandbox(current_user())
    created = _ensure_database(target, request.create)
    try:
        _check_target(target, binaries, archive, request, sandbox)
        run, atomic = _run(binaries, archive, target, request, jobs, sandbox)
        if not run.ok:
            detail = "; ".join(target.scrub(e) for e in run.errors[:5])
            raise SbtcOpsError(
                f"restore into {target.shown} failed: {detail or f'exit {run.returncode}'}; "
                + ("the database it created was dropped" if created else atomic_note(atomic))
            )
    except BaseException:
        if created:
            _drop_created(target)  # failed or interrupted: leave the server as we found it
        raise
    return run, atomic, created


def atomic_note(atomic: bool) -> str:
    if atomic:
        return "it ran as one transaction, rolled back: the target database is unchanged"
    return (
        "the target may hold part of the backup (a parallel restore is not one transaction); "
        "restore again with --clean, or into a new database with --create"
    )


_MISSING_DB = re.compile(r'database "[^"]*" does not exist')


def _ensure_database(target: ConnectionTarget, create: bool) -> bool:
    """True when --create made the database; a missing one without --create is refused."""
    try:
        with target.connect(autocommit=True):
            return False
    except DependencyError as exc:
        if not _MISSING_DB.search(str(exc)):
            raise
    name = str(target.params.get("dbname") or "")
    if not create:
        raise UsageError(
            f"the target database {name!r} does not exist on {_server(target)}; nothing was "
            "restored",
            hint="add --create to create it (the connecting role needs CREATEDB), or create it "
            "yourself: CREATE DATABASE …",
        )
    with _maintenance(target).connect(autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise SbtcOpsError(
                f"cannot create database {name!r} on {_server(target)}: "
                f"{target.scrub(str(exc))}; nothing was restored"
            ) from None
    return True


def _drop_created(target: ConnectionTarget) -> None:
    name = str(target.params.get("dbname") or "")
    with _maintenance(target).connect(autocommit=True) as conn:
        # FORCE: an interrupted pg_restore's session may not have ended on the server yet.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _maintenance(target: ConnectionTarget) -> ConnectionTarget:
    """The same server and role, database `postgres` (where CREATE DATABASE is run)."""
    return replace(target, params={**target.params, "dbname": "postgres"})


def _server(target: ConnectionTarget) -> str:
    host = target.params.get("host") or "localhost"
    return f"{host}:{target.params.get('port') or 5432}"


def _check_target(
    target: ConnectionTarget,
    binaries: Any,
    archive: PreparedArchive,
    request: RestoreRequest,
    sandbox: Sandbox,
) -> None:
    """Refuse, before anything is written, a target the restore would collide with."""
    if request.clean:
        return
    schemas = archive_schemas(binaries, archive, sandbox)
    with target.connect(autocommit=True) as conn:
        present = sorted(
            str(row[0])
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (sorted(schemas),)
            )
        )
    if present:
        raise UsageError(
            f"{target.shown} already has schema {', '.join(present)}, which the backup "
            "contains; nothing was restored",
            hint="add --clean to drop the objects the backup contains and restore them (one "
            "transaction: all or nothing), or restore into a new database with --create",
        )
    tables = _user_tables(target)
    if tables and not request.force:
        raise UsageError(
            f"{target.shown} is not empty ({tables} tables); nothing was restored",
            hint="restore into a new empty database (--create), add --force to restore beside "
            "what is there, or --clean to replace what the backup contains",
        )


_TOC_SCHEMA = re.compile(r"^\d+; \d+ \d+ SCHEMA - (\S+) ", re.MULTILINE)


def archive_schemas(binaries: Any, archive: PreparedArchive, sandbox: Sandbox) -> set[str]:
    """Schemas the archive creates (pg_restore --list, in the sandbox: it parses the
    archive); for a plain dump, the signer's."""
    if archive.format == "plain":
        return {SIGNER_SCHEMA}
    listed = sandbox.run([str(binaries.pg_restore), "--list", str(archive.path)], timeout_s=600)
    if listed.returncode != 0:
        raise SbtcOpsError(
            f"pg_restore cannot read the archive's table of contents: "
            f"{listed.stderr.strip()[:300]}; nothing was restored"
        )
    return set(_TOC_SCHEMA.findall(listed.stdout)) | {SIGNER_SCHEMA}


def _run(
    binaries: Any,
    archive: PreparedArchive,
    target: ConnectionTarget,
    request: RestoreRequest,
    jobs_setting: int,
    sandbox: Sandbox,
) -> tuple[RestoreRun, bool]:
    """Run the restore; returns it and whether it was one transaction."""
    # --clean must be all-or-nothing: one job, so one transaction.
    jobs = jobs_setting if archive.format == "directory" and not request.clean else 1
    # The operator's libpq environment applies; secrets via environment or 0600 file.
    with client_invocation(target.client) as invocation:
        argv = restore_argv(binaries, archive, invocation.conninfo, jobs=jobs, strict=True)
        # Added options go at the end, pg_restore's before its last argument, the archive.
        if archive.format == "plain":
            argv.append("--single-transaction")  # psql: with ON_ERROR_STOP, all or nothing
        elif request.clean:
            argv[-1:-1] = ["--clean", "--if-exists"]
        atomic = "--single-transaction" in argv
        plain = archive.path if archive.format == "plain" else None
        libpq_env = {k: v for k, v in invocation.env.items() if k.startswith("PG")}
        run = run_restore(argv, libpq_env, sandbox, plain, progress_of=archive.path)
    return run, atomic


def restored_summary(target: ConnectionTarget, expected: dict[str, int] | None) -> dict[str, Any]:
    """What the target holds now: the signer's tables with exact row counts (compared with
    the manifest's), and its newest DKG keys."""
    counts: dict[str, int] = {}
    with target.connect(autocommit=True) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND (n.nspname = %s "
                "OR (n.nspname = 'public' AND c.relname = '__sbtc_migrations')) ORDER BY 1",
                (SIGNER_SCHEMA,),
            )
        ]
        for table in tables:
            schema, name = table.split(".", 1)
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
            row = conn.execute(query).fetchone()
            counts[table] = int(row[0]) if row else 0
        keys = _newest_keys(conn) if f"{SIGNER_SCHEMA}.dkg_shares" in counts else {}
    mismatched = sorted(t for t, n in (expected or {}).items() if counts.get(t) != n)
    return {
        "tables": len(counts),
        "rows": sum(counts.values()),
        "rows_match_manifest": None if expected is None else not mismatched,
        "rows_differ": mismatched,
        "newest_dkg_key": keys.get("newest"),
        "newest_verified_dkg_key": keys.get("verified"),
    }


def _newest_keys(conn: Any) -> dict[str, str | None]:
    newest = conn.execute(
        "SELECT encode(aggregate_key, 'hex'), dkg_shares_status::text FROM "
        "sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    verified = conn.execute(
        "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares "
        "WHERE dkg_shares_status = 'verified' ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    return {
        "newest": f"{newest[0]} ({newest[1]})" if newest else None,
        "verified": str(verified[0]) if verified else None,
    }
