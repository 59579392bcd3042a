"""The scheduler with an injectable clock: schedules, jitter, overlap prevention, catch-up
after downtime, follow-up jobs, crash isolation, and what is recorded in the state DB."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import datetime
from pathlib import Path

import pytest

from sbtc_ops.history import JobOutcome
from sbtc_ops.serve.scheduler import (
    JobContext,
    JobResult,
    JobSpec,
    Scheduler,
)
from sbtc_ops.state import StateStore


class FakeClock:
    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def wait(self, wake: threading.Event, seconds: float) -> bool:
        self.t += seconds
        return False


def at(text: str) -> float:
    """A local wall-clock time (cron fields are local time)."""
    return datetime.fromisoformat(text).timestamp()


class Recorder:
    """A job action that records calls and returns scripted results."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.results: dict[str, list[JobResult]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.clock: FakeClock | None = None
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> JobResult:
        assert self.clock is not None
        with self._lock:
            self.calls.append((ctx.name, self.clock.now()))
            self.active[ctx.name] = self.active.get(ctx.name, 0) + 1
            self.max_active[ctx.name] = max(self.max_active.get(ctx.name, 0), self.active[ctx.name])
        try:
            if ctx.name in self.entered:
                self.entered[ctx.name].set()
            if ctx.name in self.gates:
                assert self.gates[ctx.name].wait(10)
            scripted = self.results.get(ctx.name)
            result = (
                scripted.pop(0)
                if scripted
                else JobResult(JobOutcome.OK, f"{ctx.name} done", {"n": 1})
            )
            if result.outcome == "raise":
                raise RuntimeError(f"{ctx.name} blew up")
            return result
        finally:
            with self._lock:
                self.active[ctx.name] -= 1

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make(
    tmp_path: Path,
    specs: list[JobSpec],
    start: float,
    *,
    jitter_s: float = 0.0,
    recorder: Recorder | None = None,
    hook: list[tuple[str, str, str | None]] | None = None,
) -> tuple[Scheduler, FakeClock, Recorder]:
    clock = FakeClock(start)
    rec = recorder or Recorder()
    rec.clock = clock

    def on_finish(job: str, result: JobResult, previous: str | None) -> None:
        if hook is not None:
            hook.append((job, result.outcome, previous))

    sched = Scheduler(
        specs,
        rec,
        tmp_path / "state",
        clock=clock,
        jitter_s=jitter_s,
        rng=random.Random(7),
        on_finish=on_finish,
    )
    return sched, clock, rec


def advance(sched: Scheduler, clock: FakeClock, until: float, step: float = 60.0) -> None:
    """Drive the loop minute by minute, letting each started run finish."""
    while clock.t < until:
        sched.tick()
        assert sched.wait_idle(10)
        clock.t += step


DAILY = JobSpec("backup", "17 3 * * *")
TEN_MIN = JobSpec("chain-check", "*/10 * * * *")


def test_first_start_runs_every_job_once_then_follows_the_cron(tmp_path: Path) -> None:
    sched, clock, rec = make(tmp_path, [DAILY, TEN_MIN], at("2026-03-02T10:00:30"))
    sched.start()
    advance(sched, clock, at("2026-03-03T04:00:00"))
    backups = [t for name, t in rec.calls if name == "backup"]
    checks = [t for name, t in rec.calls if name == "chain-check"]
    # Never ran here before: both run at once, then on schedule.
    assert backups == [at("2026-03-02T10:00:30"), at("2026-03-03T03:17:30")]
    assert checks[0] == at("2026-03-02T10:00:30")
    assert checks[1] == at("2026-03-02T10:10:30")
    assert len(checks) == 1 + 107  # then 10:10, 10:20 … 03:50
    assert all(b - a == pytest.approx(600) for a, b in itertools.pairwise(checks[1:]))


def test_jitter_delays_each_scheduled_run_within_bounds(tmp_path: Path) -> None:
    sched, clock, rec = make(tmp_path, [TEN_MIN], at("2026-03-02T10:00:00"), jitter_s=120)
    sched.start()
    advance(sched, clock, at("2026-03-02T12:00:00"), step=1.0 * 7)
    starts = [t for _, t in rec.calls][1:]
    slots = [at("2026-03-02T10:10:00") + 600 * i for i in range(len(starts))]
    delays = [start - slot for start, slot in zip(starts, slots, strict=True)]
    assert len(starts) == 11
    assert all(0 <= delay <= 120 + 7 for delay in delays)
    assert len({round(delay) for delay in delays}) > 3  # not a constant offset


def test_catch_up_after_downtime_runs_once_not_once_per_missed_slot(tmp_path: Path) -> None:
    sched, clock, rec = make(tmp_path, [DAILY, TEN_MIN], at("2026-03-02T03:17:00"))
    sched.start()
    advance(sched, clock, at("2026-03-02T03:30:00"))
    assert rec.names().count("backup") == 1
    # The daemon is down for three days, then restarts at 15:00.
    later, clock2, rec2 = make(tmp_path, [DAILY, TEN_MIN], at("2026-03-05T15:00:00"))
    later.start()
    assert later.due["backup"] == at("2026-03-05T15:00:00")
    advance(later, clock2, at("2026-03-05T15:05:00"))
    assert rec2.names().count("backup") == 1
    assert rec2.names().count("chain-check") == 1
    # The next backup is the regular slot, not another catch-up.
    assert later.due["backup"] == at("2026-03-06T03:17:00")


def test_restart_before_the_next_slot_does_not_run_early(tmp_path: Path) -> None:
    sched, clock, _ = make(tmp_path, [DAILY], at("2026-03-02T03:17:00"))
    sched.start()
    advance(sched, clock, at("2026-03-02T03:20:00"))
    again, _, rec = make(tmp_path, [DAILY], at("2026-03-02T09:00:00"))
    again.start()
    assert again.tick() == []
    assert again.due["backup"] == at("2026-03-03T03:17:00")
    assert rec.calls == []


def test_never_two_runs_of_one_job_at_once_and_a_missed_slot_is_coalesced(
    tmp_path: Path,
) -> None:
    rec = Recorder()
    gate = rec.gates["chain-check"] = threading.Event()
    entered = rec.entered["chain-check"] = threading.Event()
    sched, clock, _ = make(tmp_path, [TEN_MIN], at("2026-03-02T10:00:00"), recorder=rec)
    sched.start()
    assert sched.tick() == ["chain-check"]
    assert entered.wait(5)
    # The run hangs across three more slots.
    for minutes in (10, 20, 30):
        clock.t = at("2026-03-02T10:00:00") + minutes * 60
        assert sched.tick() == []
    assert sched.is_running("chain-check")
    assert sched.skipped["chain-check"] == 3
    gate.set()
    assert sched.wait_idle(5)
    # One catch-up run for the missed slots, then back on schedule.
    assert sched.tick() == ["chain-check"]
    assert sched.wait_idle(5)
    assert sched.tick() == []
    assert rec.max_active["chain-check"] == 1
    assert len(rec.calls) == 2


def test_a_run_in_another_live_process_counts_as_running(tmp_path: Path) -> None:
    sched, _, rec = make(tmp_path, [TEN_MIN], at("2026-03-02T10:00:00"))
    with StateStore.open(tmp_path / "state") as store:
        store.start_run("chain-check")  # owned by this (live) process, e.g. a timer run
    sched.start()
    assert sched.tick() == []
    assert rec.calls == []


def test_a_crashing_job_is_recorded_as_failed_and_the_scheduler_keeps_going(
    tmp_path: Path,
) -> None:
    rec = Recorder()
    rec.results["chain-check"] = [JobResult("raise", "")]
    hooks: list[tuple[str, str, str | None]] = []
    sched, clock, _ = make(
        tmp_path, [DAILY, TEN_MIN], at("2026-03-02T10:00:00"), recorder=rec, hook=hooks
    )
    sched.start()
    advance(sched, clock, at("2026-03-02T10:25:00"))
    with StateStore.open(tmp_path / "state") as store:
        runs = store.runs("chain-check")
        backup = store.last_run("backup")
    outcomes = [run.outcome for run in reversed(runs)]
    assert outcomes == [JobOutcome.ERROR, JobOutcome.OK, JobOutcome.OK]
    crashed = runs[-1]
    assert "RuntimeError: chain-check blew up" in crashed.data["summary"]
    assert crashed.ended_at is not None
    assert backup is not None and backup.outcome == JobOutcome.OK
    # The finish hook sees each transition (what notifications are built on).
    chain_hooks = [h for h in hooks if h[0] == "chain-check"]
    assert chain_hooks == [
        ("chain-check", JobOutcome.ERROR, None),
        ("chain-check", JobOutcome.OK, JobOutcome.ERROR),
        ("chain-check", JobOutcome.OK, JobOutcome.OK),
    ]


def test_a_successful_backup_triggers_its_verify_and_a_failed_one_does_not(
    tmp_path: Path,
) -> None:
    rec = Recorder()
    rec.results["backup"] = [
        JobResult(JobOutcome.ERROR, "disk full"),
        JobResult(JobOutcome.OK, "b2"),
    ]
    specs = [DAILY, JobSpec("verify", after="backup")]
    sched, clock, _ = make(tmp_path, specs, at("2026-03-02T03:00:00"), recorder=rec)
    sched.start()
    advance(sched, clock, at("2026-03-02T03:05:00"))
    assert rec.names() == ["backup"]
    advance(sched, clock, at("2026-03-02T03:30:00"))  # the 03:17 slot succeeds
    assert rec.names() == ["backup", "backup", "verify"]
    assert rec.calls[2][1] >= rec.calls[1][1]


def test_a_verify_lost_to_a_restart_is_caught_up(tmp_path: Path) -> None:
    specs = [DAILY, JobSpec("verify", after="backup")]
    with StateStore.open(tmp_path / "state") as store:
        run = store.start_run("backup", at=at("2026-03-02T03:17:00"))
        store.finish_run(run, JobOutcome.OK, {"summary": "b1"}, at=at("2026-03-02T03:18:00"))
    sched, _, rec = make(tmp_path, specs, at("2026-03-02T03:20:00"))
    sched.start()
    assert sched.tick() == ["verify"]
    assert sched.wait_idle(5)
    assert rec.names() == ["verify"]


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "state") as store:
        dead = store.start_run("backup", at=at("2026-03-02T03:17:00"))
        # Pretend a killed daemon (pid 1's start time never matches a fresh record).
        store._conn.execute(
            "UPDATE runs SET data = ? WHERE id = ?",
            ('{"owner": {"pid": 999999999, "start": 1}}', dead),
        )
        live = store.start_run("audit", at=at("2026-03-02T03:18:00"))
    sched, _, _ = make(tmp_path, [DAILY], at("2026-03-02T03:20:00"))
    assert sched.start() == 1
    with StateStore.open(tmp_path / "state") as store:
        by_id = {run.id: run for run in store.runs()}
    assert by_id[dead].outcome == "interrupted"
    assert by_id[dead].ended_at == at("2026-03-02T03:20:00")
    assert by_id[live].outcome == "running"


def test_shutdown_cancels_running_jobs_and_records_them_interrupted(tmp_path: Path) -> None:
    rec = Recorder()
    entered = rec.entered["backup"] = threading.Event()

    def slow(ctx: JobContext) -> JobResult:
        entered.set()
        ctx.cancel.wait(10)
        return JobResult(JobOutcome.ERROR, "killed")

    clock = FakeClock(at("2026-03-02T03:17:00"))
    sched = Scheduler([DAILY], slow, tmp_path / "state", clock=clock)
    sched.start()
    sched.tick()
    assert entered.wait(5)
    assert sched.shutdown(grace_s=5) == []
    assert sched.tick() == []  # nothing new starts after shutdown
    with StateStore.open(tmp_path / "state") as store:
        run = store.last_run("backup")
    assert run is not None and run.outcome == "interrupted"


def test_history_is_pruned_but_the_run_counters_keep_counting(tmp_path: Path) -> None:
    short = JobSpec("chain-check", "*/10 * * * *", keep_days=0.25)  # six hours
    sched, clock, _ = make(tmp_path, [short], at("2026-03-02T00:00:00"))
    sched.start()
    advance(sched, clock, at("2026-03-02T18:00:00"), step=600)
    with StateStore.open(tmp_path / "state") as store:
        kept = store.runs("chain-check", limit=10_000)
        counts = store.run_counts()
    assert counts[("chain-check", JobOutcome.OK)] == 18 * 6
    assert 36 <= len(kept) <= 38
    assert min(run.started_at for run in kept) >= at("2026-03-02T11:40:00")


def test_problem_outcome_is_recorded_with_key_figures(tmp_path: Path) -> None:
    rec = Recorder()
    rec.results["chain-check"] = [JobResult(JobOutcome.PROBLEM, "1/2 endpoints up", {"up": 1})]
    sched, _, _ = make(tmp_path, [TEN_MIN], at("2026-03-02T10:00:00"), recorder=rec)
    sched.start()
    sched.tick()
    assert sched.wait_idle(5)
    with StateStore.open(tmp_path / "state") as store:
        run = store.last_run("chain-check")
    assert run is not None
    assert (run.outcome, run.data["summary"], run.data["up"]) == (
        JobOutcome.PROBLEM,
        "1/2 endpoints up",
        1,
    )
    assert run.started_at == at("2026-03-02T10:00:00")


def test_jobs_of_one_group_never_overlap_and_a_request_runs_after(tmp_path: Path) -> None:
    rec = Recorder()
    gate = rec.gates["backup"] = threading.Event()
    entered = rec.entered["backup"] = threading.Event()
    specs = [JobSpec("backup", "17 3 * * *", group="backup"), JobSpec("dkg-backup", group="backup")]
    sched, _, _ = make(tmp_path, specs, at("2026-03-02T03:17:00"), recorder=rec)
    sched.start()
    assert sched.tick() == ["backup"]
    assert entered.wait(5)
    sched.request("dkg-backup")  # e.g. the DKG watch, while the full backup holds the lock
    assert sched.tick() == []
    gate.set()
    assert sched.wait_idle(5)
    assert sched.tick() == ["dkg-backup"]
    assert sched.wait_idle(5)
    assert rec.names() == ["backup", "dkg-backup"]
    sched.request("unknown-job")  # ignored
    assert sched.tick() == []
