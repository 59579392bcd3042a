"""What `history` shows: the daemon's job runs and the runs operators start from the CLI.

Job runs (serve, serve --once) live in the state database's `runs` table, which also feeds the
scheduler's catch-up and the job-run counters; a `backup` or `verify` typed by an operator must
count in neither, so it is recorded as an event of kind `cli-run` (subject: the job name) and
merged here, newest first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.state import EventKind, StateStore

log = logging.getLogger(__name__)
CLI_RUNS_KEPT = 1000  # per state database; older CLI runs are dropped as new ones are recorded


class JobName(StrEnum):
    """The jobs `serve` runs (serve/jobs.py has their schedules and bodies); their runs are
    what `history` lists. Here, below serve, so that history and the CLI can name them."""

    BACKUP = "backup"
    VERIFY = "verify"
    VERIFY_ROTATE = "verify-rotate"
    AUDIT = "audit"
    CHAIN_CHECK = "chain-check"
    DKG_BACKUP = "dkg-backup"
    SIGNER_CHECK = "signer-check"


class JobOutcome(StrEnum):
    """How a job run ended (stored in state.db, shown by `history`, exported as metrics);
    a CLI run of `backup` or `verify` ends the same ways."""

    OK = "ok"
    PROBLEM = "problem"
    ERROR = "error"
    INTERRUPTED = "interrupted"


# Commands that record their CLI runs, besides the daemon's jobs.
CLI_JOBS = (JobName.BACKUP, JobName.VERIFY)
NOTHING_RECORDED = (
    "no runs recorded yet: `history` lists the runs of `sbtc-ops serve` (and `serve --once`) "
    "and the `backup` and `verify` commands"
)


@dataclass(frozen=True)
class CliRun:
    """One CLI command run, as `history` shows it."""

    job: str
    started_at: float
    ended_at: float
    outcome: str  # a JobOutcome
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


def valid_jobs() -> tuple[str, ...]:
    return tuple(dict.fromkeys((*JobName, *CLI_JOBS)))


def check_job_name(job: str | None) -> None:
    """`history --job NAME`: an unknown name is a usage error that lists the known ones."""
    if job is None or job in valid_jobs():
        return
    raise UsageError(f"--job {job!r} is not a job; jobs: {', '.join(valid_jobs())}")


def record_cli_run(state_dir: Path, run: CliRun) -> None:
    with StateStore.open(state_dir) as store, store.transaction():
        store.record_event(
            EventKind.CLI_RUN,
            run.job,
            run.outcome,
            {**run.data, "summary": run.summary, "ended_at": run.ended_at},
            at=run.started_at,
        )
        store.prune_events(EventKind.CLI_RUN, CLI_RUNS_KEPT)


def record_cli_outcome(
    state_dir: Path, job: str, started: float, outcome: str, summary: str, data: dict[str, Any]
) -> None:
    """Record one CLI run for `history`; a failure to record never fails the command."""
    try:
        record_cli_run(state_dir, CliRun(job, started, time.time(), outcome, summary, data))
    except SbtcOpsError as exc:  # the command's result matters more than its history entry
        log.warning("%s run not recorded in history: %s", job, exc)


@dataclass
class RunRecorder:
    """What a command run from the CLI says about itself when it ends (`finished`)."""

    outcome: str | None = None
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def finished(self, outcome: str, summary: str, data: dict[str, Any]) -> None:
        self.outcome, self.summary, self.data = outcome, summary, data


@contextmanager
def recorded_cli_run(
    state_dir: Path, job: str, error_data: dict[str, Any] | None = None
) -> Iterator[RunRecorder]:
    """Record the run of the body for `history`: as the body said (`RunRecorder.finished`),
    or as an error when it raises one (a usage error is no run). Recording never fails it."""
    started = time.time()
    recorder = RunRecorder()
    try:
        yield recorder
    except SbtcOpsError as exc:
        if not isinstance(exc, UsageError):
            record_cli_outcome(
                state_dir, job, started, JobOutcome.ERROR, exc.message, error_data or {}
            )
        raise
    if recorder.outcome is not None:
        record_cli_outcome(
            state_dir, job, started, recorder.outcome, recorder.summary, recorder.data
        )


def history_rows(store: StateStore, job: str | None, limit: int) -> list[dict[str, Any]]:
    """Job runs and CLI runs, newest first, at most `limit`."""
    rows = [_run_row(run) for run in store.runs(job, limit=limit)]
    rows += [_event_row(event) for event in store.events(EventKind.CLI_RUN, job, limit=limit)]
    rows.sort(key=lambda row: row["_at"], reverse=True)
    for row in rows:
        del row["_at"]
    return rows[:limit]


def _run_row(run: Any) -> dict[str, Any]:
    data = {key: value for key, value in run.data.items() if key not in ("summary", "owner")}
    return {
        "id": run.id,
        "job": run.job,
        "origin": "serve",
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at) if run.ended_at is not None else None,
        "duration_s": round(run.ended_at - run.started_at, 3) if run.ended_at else None,
        "outcome": run.outcome,
        "summary": run.data.get("summary"),
        "data": data,
        "_at": run.started_at,
    }


def _event_row(event: Any) -> dict[str, Any]:
    data = dict(event.data)
    summary = data.pop("summary", None)
    ended = data.pop("ended_at", None)
    ended_at = float(ended) if isinstance(ended, int | float) else None
    return {
        "id": None,
        "job": event.subject,
        "origin": "cli",
        "started_at": _iso(event.at),
        "ended_at": _iso(ended_at) if ended_at is not None else None,
        "duration_s": round(ended_at - event.at, 3) if ended_at is not None else None,
        "outcome": event.outcome,
        "summary": summary,
        "data": data,
        "_at": event.at,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
