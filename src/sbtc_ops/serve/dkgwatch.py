"""The DKG watch: new key shares are backed up within minutes, not at the next daily backup.

Every `serve.dkg_poll_interval_s` the live signer database is asked for a cheap fingerprint
of `dkg_shares` (row count, newest created_at, counts per status). When it changes (a new
DKG round, or a round becoming verified or failed), a `--dkg-only` backup runs at once and a
full backup is scheduled. While the newest row is in no backup, `sbtc_ops_dkg_unprotected_seconds`
grows; the shipped alert fires after 15 minutes.

What the watch saw is recorded as `dkg-watch` events (only when something changes), so the
metric and the status page are computed from the state database like everything else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from sbtc_ops.backup.source import dkg_fingerprint, parse_target
from sbtc_ops.config import Settings, secret_values
from sbtc_ops.errors import ConfigError, SbtcOpsError
from sbtc_ops.redact import scrub
from sbtc_ops.state import Event, EventKind, StateStore

log = logging.getLogger(__name__)

DKG_BACKUP = "dkg-backup"
_EVENTS_KEPT = 200
_RETRY_S = 300.0  # while unprotected, a failed dkg backup is tried again this often

NEWEST_ROW_QUERY = (
    "SELECT encode(aggregate_key, 'hex'), created_at, dkg_shares_status::text "
    "FROM sbtc_signer.dkg_shares ORDER BY created_at DESC, aggregate_key LIMIT 1"
)


@dataclass(frozen=True)
class NewestRow:
    key: str
    created_at: float
    status: str


def is_protected(row: dict[str, Any], backups: list[Event]) -> bool:
    """A successful backup taken after the row appeared holds it; when the row is verified,
    the backup must also hold it as verified (else a restore would show the older key)."""
    created = row.get("created_at")
    if created is None:
        return True  # no DKG row at all: nothing to protect
    for backup in backups:
        if backup.outcome != "ok":
            continue
        backed_up = _timestamp(backup.data.get("dkg_created_at"))
        if backed_up is None or backed_up < created:
            continue
        if row.get("status") != "verified":
            return True
        if backup.data.get("newest_verified_aggregate_key") == row.get("key"):
            return True
    return False


def last_observation(events: list[Event]) -> Event | None:
    """The newest watch event that saw the table (error events do not)."""
    return next((e for e in events if "row" in e.data), None)


def unprotected_seconds(watch: Event | None, backups: list[Event], now: float) -> float | None:
    """Seconds the newest DKG row has been in no backup; 0 when protected; None if unknown."""
    if watch is None or "row" not in watch.data:
        return None
    row = watch.data["row"]
    if is_protected(row, backups):
        return 0.0
    since = float(watch.data.get("since") or row.get("created_at") or now)
    return max(0.0, now - since)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


class DkgWatch:
    """Polls the live database; asks the scheduler for a dkg-only and a full backup."""

    def __init__(
        self,
        settings: Settings,
        request_job: Callable[[str], None],
        job_running: Callable[[str], bool],
        *,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] = log.warning,
    ) -> None:
        self.settings = settings
        self.request_job = request_job
        self.job_running = job_running
        self.clock = clock
        self.announce = announce
        self.interval_s = settings.serve.dkg_poll_interval_s
        self.fingerprint: tuple[Any, ...] | None = None
        self.up: bool | None = None
        self.last_poll: float | None = None
        self.last_trigger = float("-inf")
        self._conn: Any = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll()
            stop.wait(self.interval_s)
        self._close()

    def poll(self) -> None:
        now = self.clock()
        try:
            fingerprint, row = self._read()
        except (psycopg.Error, SbtcOpsError, OSError) as exc:  # report, retry next interval
            self._close()
            if self.up is not False:
                self.announce(f"DKG watch: cannot read the signer database: {self._describe(exc)}")
                self._record("error", {"error": self._describe(exc)}, now)
            self.up = False
            return
        recovered = self.up is False
        if recovered:
            self.announce("DKG watch: the signer database answers again")
        self.up = True
        self.last_poll = now
        self._observe(fingerprint, row, now, recovered=recovered)

    def _observe(
        self, fingerprint: tuple[Any, ...], row: NewestRow | None, now: float, *, recovered: bool
    ) -> None:
        with StateStore.open(self.settings.state_dir) as store:
            previous = last_observation(store.events(EventKind.DKG_WATCH, "live", limit=20))
            backups = store.events(EventKind.BACKUP, limit=50)
        known = previous.data.get("fingerprint") if previous is not None else None
        changed = self.fingerprint is not None and fingerprint != self.fingerprint
        first = self.fingerprint is None
        self.fingerprint = fingerprint
        row_doc = (
            {"key": row.key, "created_at": row.created_at, "status": row.status} if row else {}
        )
        if changed or recovered or (first and list(fingerprint) != known):
            since = (
                row.created_at
                if row and _is_new_round(previous, row)
                else float(previous.data.get("since") or now)
                if previous is not None and not changed
                else now
            )
            self._record(
                "ok", {"fingerprint": list(fingerprint), "row": row_doc, "since": since}, now
            )
            if row is not None and not is_protected(row_doc, backups):
                self._trigger(now, "new DKG shares" if changed else "DKG shares not in a backup")
            return
        # Still unprotected (a dkg backup failed, or the daemon restarted): try again.
        retry_due = now - self.last_trigger >= max(_RETRY_S, self.interval_s)
        if row is not None and retry_due and not is_protected(row_doc, backups):
            self._trigger(now, "DKG shares still not in a backup")

    def _trigger(self, now: float, why: str) -> None:
        if self.job_running(DKG_BACKUP):
            return  # the scheduler coalesces; a request now would run right after anyway
        self.last_trigger = now
        self.announce(f"DKG watch: {why}: taking a --dkg-only backup now, a full backup next")
        self.request_job(DKG_BACKUP)
        self.request_job("backup")

    # -- the database -----------------------------------------------------------------------

    def _read(self) -> tuple[tuple[Any, ...], NewestRow | None]:
        if self._conn is None:
            self._conn = self._connect()
        fingerprint = dkg_fingerprint(self._conn)
        found = self._conn.execute(NEWEST_ROW_QUERY).fetchone()
        row = NewestRow(str(found[0]), found[1].timestamp(), str(found[2])) if found else None
        return tuple(_plain(v) for v in fingerprint), row

    def _connect(self) -> Any:
        url = self.settings.effective_db_url
        if url is None:
            raise ConfigError("no signer database configured (db.url or the signer's db_endpoint)")
        return parse_target(url).connect(autocommit=True)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except (psycopg.Error, OSError):  # closing a broken connection
                log.debug("closing the watch connection failed", exc_info=True)
            self._conn = None

    def _describe(self, exc: Exception) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return scrub(text, secret_values(self.settings))

    def _record(self, outcome: str, data: dict[str, Any], now: float) -> None:
        with StateStore.open(self.settings.state_dir) as store:
            store.record_event(EventKind.DKG_WATCH, "live", outcome, data, at=now)
            store.prune_events(EventKind.DKG_WATCH, _EVENTS_KEPT)


def _is_new_round(previous: Event | None, row: NewestRow) -> bool:
    """A row not seen before (a new round) counts from its created_at; a status change of a
    known row counts from when the watch saw it."""
    if previous is None:
        return True
    known = previous.data.get("row") or {}
    return bool(known.get("key") != row.key)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
