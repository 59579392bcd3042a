"""When jobs run: cron schedules with jitter, runs triggered by another job, catch-up after
downtime, never two runs of one job at once, and a crashing job that does not take the
daemon down.

Time comes from an injectable Clock so tests drive the schedule without sleeping. Every run is
recorded in the state database (start, end, outcome, key figures); that record is also what
catch-up reads after a restart.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from croniter import croniter

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.history import JobOutcome
from sbtc_ops.state import StateStore, process_alive

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float:
        """Unix time."""

    def wait(self, wake: threading.Event, seconds: float) -> bool:
        """Sleep up to `seconds` or until `wake` is set; True when woken."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def wait(self, wake: threading.Event, seconds: float) -> bool:
        return wake.wait(max(0.0, seconds))


@dataclass(frozen=True)
class JobSpec:
    """One job: a cron schedule and/or a job whose successful run triggers it."""

    name: str
    cron: str | None = None
    after: str | None = None
    timeout_s: float = 3600.0
    keep_days: float = 400.0
    group: str | None = None  # jobs of one group never run at once (they share a lock)
    # Jobs this one never runs beside, either way round (a backup that prunes and a
    # verify); the per-backup locks make it safe anyway, this keeps the order sensible.
    not_beside: tuple[str, ...] = ()
    priority: int = 5  # among jobs due at the same moment (catch-up), lower starts first

    def next_fire(self, after: float) -> float | None:
        if not self.cron:
            return None
        # Cron fields are read in the host's local time, like cron and systemd timers.
        start = datetime.fromtimestamp(after).astimezone()
        return float(croniter(self.cron, start).get_next(float))


@dataclass
class JobResult:
    outcome: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    name: str
    run_id: int
    timeout_s: float
    cancel: threading.Event


JobAction = Callable[[JobContext], JobResult]
FinishHook = Callable[[str, JobResult, str | None], None]


class Scheduler:
    """Decides which job is due, starts each in its own thread, records every run."""

    def __init__(
        self,
        specs: list[JobSpec],
        action: JobAction,
        state_dir: Path,
        *,
        clock: Clock | None = None,
        jitter_s: float = 0.0,
        rng: random.Random | None = None,
        on_finish: FinishHook | None = None,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.action = action
        self.state_dir = state_dir
        self.clock = clock or SystemClock()
        self.jitter_s = jitter_s
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.on_finish = on_finish
        self.due: dict[str, float | None] = {}
        self.skipped: dict[str, int] = dict.fromkeys(self.specs, 0)
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.wake = threading.Event()
        self.started = False

    # -- start-up and catch-up --------------------------------------------------------------

    def start(self) -> int:
        """Mark runs left by a dead process as interrupted and work out what is due; returns
        how many runs were marked interrupted."""
        now = self.clock.now()
        with StateStore.open(self.state_dir) as store:
            interrupted = store.mark_interrupted(at=now)
            for spec in self.specs.values():
                self.due[spec.name] = self._initial_due(spec, store, now)
        self.started = True
        return interrupted

    def _initial_due(self, spec: JobSpec, store: StateStore, now: float) -> float | None:
        last = store.last_run(spec.name)
        if spec.after:
            trigger = store.last_run(spec.after, (JobOutcome.OK,))
            # The trigger succeeded after this job last ran (e.g. the daemon stopped between a
            # backup and its verify): catch up now.
            if trigger is not None and (last is None or trigger.started_at > last.started_at):
                return now
        if not spec.cron:
            return None
        if last is None:
            return now  # never ran here: do not wait up to a day for the first result
        fire = spec.next_fire(last.started_at)
        if fire is not None and fire <= now:
            return now  # missed while down: one catch-up run, not one per missed slot
        return self._jittered(fire)

    def _jittered(self, fire: float | None) -> float | None:
        if fire is None or self.jitter_s <= 0:
            return fire
        return fire + self.rng.uniform(0, self.jitter_s)

    # -- the loop ---------------------------------------------------------------------------

    def tick(self) -> list[str]:
        """Start every job due now that is not already running; returns the names started."""
        now = self.clock.now()
        started = []
        for name, due in sorted(self.due.items(), key=self._start_order):
            if due is None or due > now or self._cancel.is_set():
                continue
            if self._blocked(name) or self._running_elsewhere(name):
                # Coalesce: it stays due and starts once the current run ends.
                self.skipped[name] += 1
                continue
            spec = self.specs[name]
            self.due[name] = self._jittered(spec.next_fire(now))
            self._launch(spec, now)
            started.append(name)
        return started

    def _start_order(self, item: tuple[str, float | None]) -> tuple[float, int, str]:
        name, due = item
        return (due or 0.0, self.specs[name].priority, name)

    def request(self, name: str) -> None:
        """Run a job as soon as possible (once, after the current run if one is going)."""
        if name in self.specs and not self._cancel.is_set():
            self.due[name] = self.clock.now()
            self.wake.set()

    def next_due(self) -> float | None:
        times = [due for name, due in self.due.items() if due is not None]
        return min(times) if times else None

    def run_forever(self, stop: threading.Event, max_sleep_s: float = 30.0) -> None:
        if not self.started:
            self.start()
        while not stop.is_set():
            try:
                self.tick()
            except (sqlite3.Error, OSError, SbtcOpsError):
                # The state DB is busy or briefly unreadable: try again on the next pass.
                log.exception("scheduler pass failed")
            now = self.clock.now()
            upcoming = self.next_due()
            sleep = max_sleep_s if upcoming is None else min(max_sleep_s, upcoming - now)
            self.clock.wait(self.wake, max(0.05, sleep))
            self.wake.clear()

    def is_running(self, name: str) -> bool:
        with self._lock:
            thread = self._running.get(name)
            return thread is not None and thread.is_alive()

    def _blocked(self, name: str) -> bool:
        """Running itself, or another job of its group is, or one it must not run beside."""
        spec = self.specs[name]
        return any(
            other == name
            or (spec.group is not None and self.specs[other].group == spec.group)
            or other in spec.not_beside
            or name in self.specs[other].not_beside
            for other in self.running()
        )

    def running(self) -> list[str]:
        with self._lock:
            return [name for name, thread in self._running.items() if thread.is_alive()]

    def _running_elsewhere(self, name: str) -> bool:
        """A timer-started run of the same job in another live process."""
        with StateStore.open(self.state_dir) as store:
            for run in store.runs(name, limit=5):
                owner = run.data.get("owner")
                if run.outcome == "running" and owner and process_alive(owner):
                    return True
        return False

    # -- one run ----------------------------------------------------------------------------

    def run_now(self, name: str) -> JobResult:
        """Run one job in the calling thread (timer mode), recorded like a scheduled run."""
        return self._run(self.specs[name], self.clock.now())

    def _launch(self, spec: JobSpec, now: float) -> None:
        thread = threading.Thread(
            target=self._run, args=(spec, now), name=f"job-{spec.name}", daemon=True
        )
        with self._lock:
            self._running[spec.name] = thread
        thread.start()

    def _run(self, spec: JobSpec, now: float) -> JobResult:
        with StateStore.open(self.state_dir) as store:
            previous = store.last_run(
                spec.name, (JobOutcome.OK, JobOutcome.PROBLEM, JobOutcome.ERROR)
            )
            run_id = store.start_run(spec.name, at=now)
        context = JobContext(spec.name, run_id, spec.timeout_s, self._cancel)
        try:
            result = self.action(context)
        except Exception as exc:  # noqa: BLE001 - crash isolation: a job's bug fails that run only
            reason = one_line_reason(exc)
            log.error("job %s crashed: %s", spec.name, reason)
            result = JobResult(JobOutcome.ERROR, f"crashed: {reason}")
        if self._cancel.is_set() and result.outcome != JobOutcome.OK:
            result = JobResult(JobOutcome.INTERRUPTED, "stopped by shutdown", result.data)
        self._record(spec, run_id, result)
        if result.outcome == JobOutcome.OK:
            self._trigger_followers(spec.name)
        if self.on_finish is not None:
            try:
                self.on_finish(spec.name, result, previous.outcome if previous else None)
            except Exception:
                log.exception("after-run hook of %s failed", spec.name)
        self.wake.set()
        return result

    def _record(self, spec: JobSpec, run_id: int, result: JobResult) -> None:
        now = self.clock.now()
        data = {"summary": result.summary, **result.data}
        with StateStore.open(self.state_dir) as store:
            store.finish_run(run_id, result.outcome, data, at=now)
            store.prune_runs(spec.name, now - spec.keep_days * 86400)

    def _trigger_followers(self, name: str) -> None:
        now = self.clock.now()
        for spec in self.specs.values():
            if spec.after == name:
                self.due[spec.name] = now

    # -- shutdown ---------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask running jobs to stop and start no new ones (a signal handler may call this)."""
        self._cancel.set()
        self.wake.set()

    def shutdown(self, grace_s: float = 60.0) -> list[str]:
        """Ask running jobs to stop (each cleans up), wait up to grace_s; returns jobs that
        were still running when the grace period ended."""
        self.cancel()
        deadline = time.monotonic() + grace_s
        with self._lock:
            threads = list(self._running.items())
        for _, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [name for name, thread in threads if thread.is_alive()]

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait for every started run to finish (tests and timer mode)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()


def one_line_reason(exc: BaseException, limit: int = 300) -> str:
    """A failure as one line for history, stderr and webhooks: never a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    else:
        text = str(exc) or type(exc).__name__
    if not isinstance(exc, SbtcOpsError):
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
