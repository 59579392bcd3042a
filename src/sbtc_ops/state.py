"""The state directory's SQLite database: what sbtc-ops did and what it found.

Everything written is scrubbed of secrets first (sbtc_ops.redact): history, the status page,
webhooks and metrics all read from here.

Verify results, key-backup verifications and job runs are recorded here so `backups`,
`key check`, `history`, the metrics and the status page can show them after the fact.
WAL mode, so a reader (a scrape) never blocks a writer (a job).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.redact import scrub, scrub_data
from sbtc_ops.statedir import prepare_database_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,          -- 'verify', 'key-backup-verify', 'backup', ...
    subject TEXT NOT NULL,       -- a backup id, a public key, ...
    at REAL NOT NULL,            -- unix time
    outcome TEXT NOT NULL,       -- 'ok', 'problem', 'error', or a verdict
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_kind_subject ON events(kind, subject, at);
CREATE INDEX IF NOT EXISTS events_kind_at ON events(kind, at);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,       -- 'running', 'ok', 'problem', 'error', 'interrupted'
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE INDEX IF NOT EXISTS runs_outcome ON runs(outcome);
-- Runs removed by pruning still count in the job-runs counter.
CREATE TABLE IF NOT EXISTS pruned_run_counts (
    job TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (job, outcome)
);
-- The live signer database's canonical schema (pg/schema_identity.py) per migration level,
-- read at each backup from the same snapshot as the dump, or pinned (`schema pin`): the
-- reference a restored backup's schema must equal. Never read from a backup or manifest.
CREATE TABLE IF NOT EXISTS schema_references (
    level TEXT PRIMARY KEY,      -- JSON list of the applied migration keys, sorted
    newest TEXT NOT NULL,        -- the newest migration key
    digest TEXT NOT NULL,        -- sha256 hex of the canonical schema
    objects TEXT NOT NULL,       -- the canonical schema (canonical JSON)
    source TEXT NOT NULL,        -- 'backup <id>' or 'pin <where>'
    recorded_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SchemaReference:
    """A recorded canonical schema of the live signer database at one migration level."""

    migrations: list[str]
    newest: str
    digest: str
    objects_json: str
    source: str
    recorded_at: float


def migration_level(migrations: list[str]) -> str:
    """The key of a migration level: the sorted applied migration keys, as JSON."""
    return json.dumps(sorted(migrations), separators=(",", ":"))


class EventKind(StrEnum):
    """Every kind of event sbtc-ops records: one list, so a reader and a writer cannot drift."""

    BACKUP = "backup"
    BACKUP_DELETED = "backup-deleted"
    VERIFY = "verify"
    CHAIN_KEY = "chain-key"
    AUDIT = "audit"
    CLI_RUN = "cli-run"
    NOTICE = "notice"
    KEY_BACKUP = "key-backup"
    KEY_BACKUP_VERIFY = "key-backup-verify"
    DKG_WATCH = "dkg-watch"
    SIGNER_IMAGE = "signer-image"
    DB_SIZE = "db-size"
    ATTESTATION = "attestation"
    SCHEMA_REFERENCE = "schema-reference"
    RESTORE = "restore"


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    subject: str
    at: float
    outcome: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Run:
    id: int
    job: str
    started_at: float
    ended_at: float | None
    outcome: str
    data: dict[str, Any]


class StateStore:
    """One SQLite file, `state.db`, in the state directory (0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)

    @classmethod
    def open(cls, state_dir: Path) -> StateStore:
        try:
            path = state_dir / "state.db"
            # Created (or its mode set) before SQLite opens it: never world-readable, shared
            # with the service's group in a shared state directory (sbtc_ops.statedir).
            prepare_database_file(state_dir, path)
            return cls(path)
        except (OSError, sqlite3.Error) as exc:
            raise SbtcOpsError(
                f"cannot open the state database in {state_dir}: {exc}",
                hint="set state_dir in sbtc-ops.toml (or SBTC_OPS_STATE_DIR) to a writable directory",
            ) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- events ----------------------------------------------------------------------------

    def record_event(
        self,
        kind: str,
        subject: str,
        outcome: str,
        data: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO events(kind, subject, at, outcome, data) VALUES (?, ?, ?, ?, ?)",
            (
                kind,
                scrub(subject),
                time.time() if at is None else at,
                outcome,
                _json(data),
            ),
        )

    def last_event(self, kind: str, subject: str | None = None) -> Event | None:
        events = self.events(kind, subject, limit=1)
        return events[0] if events else None

    def events(self, kind: str, subject: str | None = None, limit: int = 100) -> list[Event]:
        rows = self._newest(
            "SELECT id, kind, subject, at, outcome, data FROM events",
            {"kind": kind, "subject": subject},
            "at",
            limit,
        )
        return [Event(*row) for row in rows]

    # -- schema references ------------------------------------------------------------------

    def record_schema_reference(
        self, migrations: list[str], digest: str, objects_json: str, source: str
    ) -> bool:
        """Record (or replace) the reference of this migration level; True when it is new or
        its digest changed (also recorded as an event, so a changed live schema is seen)."""
        level = migration_level(migrations)
        newest = sorted(migrations)[-1] if migrations else ""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT digest FROM schema_references WHERE level = ?", (level,)
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO schema_references"
                "(level, newest, digest, objects, source, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (level, newest, digest, objects_json, scrub(source), time.time()),
            )
        changed = row is None or row[0] != digest
        if changed:
            self.record_event(
                EventKind.SCHEMA_REFERENCE,
                newest,
                "recorded" if row is None else "changed",
                {"digest": digest, "previous": row[0] if row else None, "source": source},
            )
        return changed

    def schema_reference(self, migrations: list[str]) -> SchemaReference | None:
        row = self._conn.execute(
            "SELECT level, newest, digest, objects, source, recorded_at FROM schema_references "
            "WHERE level = ?",
            (migration_level(migrations),),
        ).fetchone()
        if row is None:
            return None
        return SchemaReference(json.loads(row[0]), row[1], row[2], row[3], row[4], row[5])

    def schema_references(self) -> list[SchemaReference]:
        rows = self._conn.execute(
            "SELECT level, newest, digest, objects, source, recorded_at FROM schema_references "
            "ORDER BY recorded_at"
        ).fetchall()
        return [SchemaReference(json.loads(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    # -- job runs ----------------------------------------------------------------------------

    def start_run(self, job: str, at: float | None = None) -> int:
        """Record a run as 'running', owned by this process (see mark_interrupted)."""
        cursor = self._conn.execute(
            "INSERT INTO runs(job, started_at, outcome, data) VALUES (?, ?, 'running', ?)",
            (job, time.time() if at is None else at, json.dumps({"owner": process_identity()})),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(
        self,
        run_id: int,
        outcome: str,
        data: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        self._conn.execute(
            "UPDATE runs SET ended_at = ?, outcome = ?, data = ? WHERE id = ?",
            (
                time.time() if at is None else at,
                outcome,
                _json(data),
                run_id,
            ),
        )

    def mark_interrupted(self, at: float | None = None) -> int:
        """Runs left 'running' by a process that is gone (kill -9, power loss): called when a
        daemon starts. Runs of a live process (a daemon next to a timer run) are left alone."""
        marked = 0
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, data FROM runs WHERE outcome = 'running'").fetchall()
            for run_id, data in rows:
                owner = json.loads(data).get("owner")
                if owner is not None and process_alive(owner):
                    continue
                conn.execute(
                    "UPDATE runs SET outcome = 'interrupted', ended_at = COALESCE(ended_at, ?) "
                    "WHERE id = ?",
                    (time.time() if at is None else at, run_id),
                )
                marked += 1
        return marked

    def last_run(self, job: str, outcomes: tuple[str, ...] = ()) -> Run | None:
        """The newest run of a job, optionally only among the given outcomes."""
        query = "SELECT id, job, started_at, ended_at, outcome, data FROM runs WHERE job = ?"
        params: list[Any] = [job]
        if outcomes:
            query += f" AND outcome IN ({', '.join('?' for _ in outcomes)})"
            params.extend(outcomes)
        query += " ORDER BY started_at DESC, id DESC LIMIT 1"
        row = self._conn.execute(query, params).fetchone()
        return (
            None if row is None else Run(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))
        )

    def running_jobs(self) -> list[str]:
        """Jobs with a run recorded as in progress."""
        rows = self._conn.execute("SELECT DISTINCT job FROM runs WHERE outcome = 'running'")
        return sorted(row[0] for row in rows)

    def run_counts(self) -> dict[tuple[str, str], int]:
        """Runs ever recorded per (job, outcome), pruned ones included."""
        counts: dict[tuple[str, str], int] = {}
        for job, outcome, count in self._conn.execute(
            "SELECT job, outcome, count(*) FROM runs GROUP BY job, outcome "
            "UNION ALL SELECT job, outcome, count FROM pruned_run_counts"
        ):
            counts[(job, outcome)] = counts.get((job, outcome), 0) + count
        return counts

    def prune_runs(self, job: str, before: float) -> int:
        """Delete finished runs of `job` that started before `before`, keeping their counts."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO pruned_run_counts(job, outcome, count) "
                "SELECT job, outcome, count(*) FROM runs "
                "WHERE job = ? AND started_at < ? AND outcome != 'running' GROUP BY job, outcome "
                "ON CONFLICT(job, outcome) DO UPDATE SET count = count + excluded.count",
                (job, before),
            )
            cursor = conn.execute(
                "DELETE FROM runs WHERE job = ? AND started_at < ? AND outcome != 'running'",
                (job, before),
            )
        return cursor.rowcount

    def prune_events(self, kind: str, keep: int) -> int:
        """Keep only the newest `keep` events of a kind."""
        cursor = self._conn.execute(
            "DELETE FROM events WHERE kind = ? AND id NOT IN "
            "(SELECT id FROM events WHERE kind = ? ORDER BY at DESC, id DESC LIMIT ?)",
            (kind, kind, keep),
        )
        return cursor.rowcount

    def runs(self, job: str | None = None, limit: int = 100) -> list[Run]:
        rows = self._newest(
            "SELECT id, job, started_at, ended_at, outcome, data FROM runs",
            {"job": job},
            "started_at",
            limit,
        )
        return [Run(*row) for row in rows]

    def _newest(
        self, select: str, equal: dict[str, Any], at_column: str, limit: int
    ) -> list[tuple[Any, ...]]:
        """The newest `limit` rows of `select` (whose last column is the JSON data, decoded
        here) whose columns equal the values of `equal` that are not None. Column names are
        this module's constants, never input."""
        conditions = {column: value for column, value in equal.items() if value is not None}
        query = select
        if conditions:
            query += " WHERE " + " AND ".join(f"{column} = ?" for column in conditions)
        query += f" ORDER BY {at_column} DESC, id DESC LIMIT ?"
        rows = self._conn.execute(query, [*conditions.values(), limit])
        return [(*row[:-1], json.loads(row[-1])) for row in rows]


def _json(data: dict[str, Any] | None) -> str:
    """A row's data as stored: scrubbed of every secret, values made JSON (str as last resort)."""
    plain = json.loads(json.dumps(data or {}, default=str))
    return json.dumps(scrub_data(plain))


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """A pid plus its start time (from /proc), so a reused pid is not taken for the owner."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": _process_start(pid)}


def process_alive(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    return start is not None and start == owner.get("start")


def _process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the command name, which may contain spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
