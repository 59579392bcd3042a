"""The state directory's SQLite database: what sbtc-ops did and what it found.

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
from pathlib import Path
from typing import Any

from sbtc_ops.errors import SbtcOpsError

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
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,       -- 'running', 'ok', 'problem', 'error', 'interrupted'
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job, started_at);
"""


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
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = state_dir / "state.db"
            if not path.exists():
                # Create it private before SQLite does, so it is never world-readable.
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
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
                subject,
                time.time() if at is None else at,
                outcome,
                json.dumps(data or {}, default=str),
            ),
        )

    def last_event(self, kind: str, subject: str | None = None) -> Event | None:
        events = self.events(kind, subject, limit=1)
        return events[0] if events else None

    def events(self, kind: str, subject: str | None = None, limit: int = 100) -> list[Event]:
        query = "SELECT id, kind, subject, at, outcome, data FROM events WHERE kind = ?"
        params: list[Any] = [kind]
        if subject is not None:
            query += " AND subject = ?"
            params.append(subject)
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [
            Event(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))
            for row in self._conn.execute(query, params)
        ]

    # -- job runs ----------------------------------------------------------------------------

    def start_run(self, job: str, at: float | None = None) -> int:
        cursor = self._conn.execute(
            "INSERT INTO runs(job, started_at, outcome) VALUES (?, ?, 'running')",
            (job, time.time() if at is None else at),
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
                json.dumps(data or {}, default=str),
                run_id,
            ),
        )

    def mark_interrupted(self) -> int:
        """Runs left 'running' by a process that died: called when a daemon starts."""
        cursor = self._conn.execute(
            "UPDATE runs SET outcome = 'interrupted' WHERE outcome = 'running'"
        )
        return cursor.rowcount

    def runs(self, job: str | None = None, limit: int = 100) -> list[Run]:
        query = "SELECT id, job, started_at, ended_at, outcome, data FROM runs"
        params: list[Any] = []
        if job is not None:
            query += " WHERE job = ?"
            params.append(job)
        query += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [
            Run(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))
            for row in self._conn.execute(query, params)
        ]
