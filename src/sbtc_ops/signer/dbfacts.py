"""The signer database's size, growth, vacuum state and schema version.

The signer never deletes rows (no DELETE/TRUNCATE in signer/src; the only deletes are in
migration 0020), `stacks_blocks` gains a row per Stacks block, and slow queries on it have made
signers "effectively offline" (stacks-sbtc/sbtc #2041). Sizes are sampled into sbtc-ops' state
database (events of kind ``db-size``) by every audit and by `serve`, so growth is measured over
the recorded history, not guessed. Queries run through a callable so the audit (read-only
session) and `serve` (its own connection) share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

from sbtc_ops.state import EventKind, StateStore

Query = Callable[[LiteralString, Sequence[Any]], list[tuple[Any, ...]]]
SIZE_SUBJECT = "signer"
SAMPLES_KEPT = 3000  # hourly audits for four months
GROWTH_WINDOW_S = 30 * 86400
MIN_SPAN_S = 3600.0

DATABASE_SIZE = "SELECT pg_database_size(current_database())"
RELATIONS = (
    "SELECT c.relname, pg_total_relation_size(c.oid), "
    "coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), "
    "extract(epoch FROM greatest(s.last_autovacuum, s.last_vacuum)) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE n.nspname = 'sbtc_signer' AND c.relkind = 'r' "
    "ORDER BY pg_total_relation_size(c.oid) DESC, c.relname"
)
MIGRATIONS = "SELECT key FROM public.__sbtc_migrations ORDER BY key"


@dataclass(frozen=True)
class Relation:
    name: str
    total_bytes: int
    live_rows: int
    dead_rows: int
    last_vacuum: float | None  # epoch seconds of the last (auto)vacuum, None if never

    @property
    def dead_fraction(self) -> float:
        total = self.live_rows + self.dead_rows
        return self.dead_rows / total if total else 0.0


def database_bytes(query: Query) -> int:
    return int(query(DATABASE_SIZE, ())[0][0])


def relations(query: Query) -> list[Relation]:
    return [
        Relation(str(n), int(b), int(live), int(dead), float(v) if v is not None else None)
        for n, b, live, dead, v in query(RELATIONS, ())
    ]


def applied_migrations(query: Query) -> list[str]:
    return [str(row[0]) for row in query(MIGRATIONS, ())]


# -- growth ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    bytes: int


def record_size(state_dir: Path, at: float, size: int) -> None:
    with StateStore.open(state_dir) as store:
        store.record_event(EventKind.DB_SIZE, SIZE_SUBJECT, "ok", {"bytes": size}, at=at)
        store.prune_events(EventKind.DB_SIZE, SAMPLES_KEPT)


def size_history(state_dir: Path, limit: int = SAMPLES_KEPT) -> list[Sample]:
    """Recorded samples, oldest first."""
    with StateStore.open(state_dir) as store:
        events = store.events(EventKind.DB_SIZE, SIZE_SUBJECT, limit=limit)
    samples = [Sample(e.at, int(e.data.get("bytes") or 0)) for e in events if "bytes" in e.data]
    return sorted(samples, key=lambda s: s.at)


def growth_per_day(samples: Sequence[Sample], now: float) -> float | None:
    """Bytes per day over the last 30 days of samples (least squares); None below an hour."""
    recent = [s for s in samples if now - GROWTH_WINDOW_S <= s.at <= now]
    if len(recent) < 2 or recent[-1].at - recent[0].at < MIN_SPAN_S:
        return None
    mean_t = sum(s.at for s in recent) / len(recent)
    mean_b = sum(s.bytes for s in recent) / len(recent)
    spread = sum((s.at - mean_t) ** 2 for s in recent)
    slope = sum((s.at - mean_t) * (s.bytes - mean_b) for s in recent) / spread
    return slope * 86400


def days_until_full(avail_bytes: int, per_day: float | None) -> float | None:
    """Days until `avail_bytes` are used at `per_day`; None when not growing."""
    if per_day is None or per_day <= 0:
        return None
    return avail_bytes / per_day
