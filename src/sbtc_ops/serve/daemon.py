"""`sbtc-ops serve`: the scheduler, the HTTP server and the notifier, wired together.

SIGTERM/SIGINT stop it gracefully: no new run starts, running jobs get SIGTERM and clean up
(a verify removes its throwaway cluster), their runs are recorded as interrupted, then the
HTTP server stops. `serve --once JOB` runs jobs exactly as the daemon would, for timers.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from sbtc_ops.config import Settings, secret_values
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.history import JobOutcome
from sbtc_ops.serve.children import child_environment, subprocess_action
from sbtc_ops.serve.dkgwatch import DkgWatch
from sbtc_ops.serve.http import StatusServer
from sbtc_ops.serve.joblog import JobLog, LogFormat, Write, write_stderr
from sbtc_ops.serve.jobs import job_specs
from sbtc_ops.serve.notify import Notifier
from sbtc_ops.serve.scheduler import JobResult, Scheduler
from sbtc_ops.serve.snapshot import Snapshot
from sbtc_ops.state import StateStore

log = logging.getLogger(__name__)
STOP_GRACE_S = 90.0


def build_scheduler(
    settings: Settings, config_path: Path | None, job_log: JobLog | None = None
) -> tuple[Scheduler, Notifier]:
    notifier = Notifier(settings.serve.webhooks, secret_values(settings))
    action = subprocess_action(child_environment(config_path))

    def on_finish(job: str, result: JobResult, previous: str | None) -> None:
        if job_log is not None:
            job_log.on_finish(job, result, previous)
        notifier.on_finish(job, result, previous)

    scheduler = Scheduler(
        job_specs(settings),
        job_log.timed(action) if job_log is not None else action,
        settings.state_dir,
        jitter_s=settings.serve.jitter_s,
        on_finish=on_finish,
    )
    return scheduler, notifier


class _Signals:
    """SIGTERM/SIGINT call `on_stop` (no exception in the middle of cleanup); restored on exit."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.on_stop = on_stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.on_stop()

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def serve(
    settings: Settings,
    *,
    bind: str | None = None,
    config_path: Path | None = None,
    log_format: LogFormat = LogFormat.TEXT,
    write: Write = write_stderr,
    extra_metrics: Callable[[Snapshot], Iterator[Metric]] | None = None,
) -> int:
    # Many scraper threads wait for the GIL; a shorter switch interval keeps their tail
    # latency low (the daemon's own threads mostly sleep or wait on child processes).
    sys.setswitchinterval(0.0005)
    job_log = JobLog(log_format, secret_values(settings), write)
    announce = job_log.announce
    scheduler, notifier = build_scheduler(settings, config_path, job_log)
    interrupted = scheduler.start()
    if interrupted:
        announce(
            f"recorded {interrupted} run(s) left unfinished by a stopped daemon as interrupted"
        )
    stop = threading.Event()
    loop = threading.Thread(
        target=scheduler.run_forever, args=(stop,), name="scheduler", daemon=True
    )
    server = _status_server(settings, bind, scheduler, _Probes(settings, loop, stop), extra_metrics)
    host, port = server.start()
    announce(f"sbtc-ops serve: listening on {_url(host, port)} ; jobs: {_jobs_line(scheduler)}")
    watch = _dkg_watch(settings, scheduler, announce)
    watcher = threading.Thread(
        target=watch.run if watch else lambda stop: None, args=(stop,), name="dkg-watch"
    )
    watcher.daemon = True
    running = _Running(scheduler, notifier, server, loop, watcher, stop, announce)
    code = running.until_stopped()
    announce("sbtc-ops serve: stopped")
    return code


@dataclass(frozen=True)
class _Probes:
    """/healthz and /readyz: the scheduler loop runs (or was asked to stop); the state
    database is readable."""

    settings: Settings
    loop: threading.Thread
    stop: threading.Event

    def healthy(self) -> tuple[bool, str]:
        alive = self.loop.is_alive() or self.stop.is_set()
        return alive, "ok" if alive else "scheduler stopped"

    def ready(self) -> tuple[bool, str]:
        if not self.loop.is_alive():
            return False, "scheduler not running"
        try:
            with StateStore.open(self.settings.state_dir) as store:
                store.last_run("backup")
        except (OSError, sqlite3.Error, SbtcOpsError) as exc:
            return False, f"state database unreadable: {type(exc).__name__}"
        return True, "ready"


def _status_server(
    settings: Settings,
    bind: str | None,
    scheduler: Scheduler,
    probes: _Probes,
    extra_metrics: Callable[[Snapshot], Iterator[Metric]] | None,
) -> StatusServer:
    def more_metrics(snap: Snapshot) -> Iterator[Metric]:
        yield schedule_metric(scheduler)
        if extra_metrics is not None:
            yield from extra_metrics(snap)

    return StatusServer(
        bind or settings.serve.bind,
        settings.state_dir,
        healthy=probes.healthy,
        ready=probes.ready,
        extra_metrics=more_metrics,
        schedule=lambda: dict(scheduler.due),
        max_connections=settings.serve.max_connections,
        idle_timeout_s=settings.serve.idle_timeout_s,
    )


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _jobs_line(scheduler: Scheduler) -> str:
    jobs = ", ".join(
        f"{s.name} ({s.cron or (f'after {s.after}' if s.after else 'on demand')})"
        for s in scheduler.specs.values()
    )
    return jobs or "none"


@dataclass(frozen=True)
class _Running:
    """The daemon's parts while it runs, and its orderly stop."""

    scheduler: Scheduler
    notifier: Notifier
    server: StatusServer
    loop: threading.Thread
    watcher: threading.Thread
    stop: threading.Event
    announce: Callable[[str], None]

    def request_stop(self) -> None:
        self.stop.set()
        self.scheduler.cancel()

    def until_stopped(self) -> int:
        """Run until SIGTERM/SIGINT (0) or until the scheduler dies (2: systemd's
        Restart=on-failure starts a new daemon); then stop everything in order."""
        code = 0
        with _Signals(self.request_stop):
            self.loop.start()
            self.watcher.start()
            try:
                while not self.stop.wait(1.0):
                    if not self.loop.is_alive():
                        self.announce("sbtc-ops serve: the scheduler stopped unexpectedly; exiting")
                        code = 2
                        break
            finally:
                self._shut_down()
        return code

    def _shut_down(self) -> None:
        self.stop.set()
        still = self.scheduler.shutdown(STOP_GRACE_S)
        if still:
            self.announce(f"jobs still running after {STOP_GRACE_S:g} s: {', '.join(still)}")
        self.loop.join(5)
        self.watcher.join(5)
        self.server.stop()
        self.notifier.wait(5)


def schedule_metric(scheduler: Scheduler) -> Metric:
    family = GaugeMetricFamily(
        "sbtc_ops_job_next_run_timestamp_seconds",
        "When the daemon will next start the job (scheduled jobs only).",
        labels=["task"],
    )
    for name, due in sorted(dict(scheduler.due).items()):
        if due is not None:
            family.add_metric([name], due)
    return family


def _dkg_watch(
    settings: Settings, scheduler: Scheduler, announce: Callable[[str], None]
) -> DkgWatch | None:
    if not settings.serve.dkg_watch:
        return None
    if settings.effective_db_url is None:
        announce("DKG watch off: no signer database configured (db.url or signer.config_path)")
        return None
    return DkgWatch(settings, scheduler.request, scheduler.is_running, announce=announce)


def run_once(
    settings: Settings, jobs: list[str], config_path: Path | None
) -> list[tuple[str, JobResult]]:
    """Run the named jobs one after another, recorded and notified like scheduled runs."""
    scheduler, notifier = build_scheduler(settings, config_path)
    unknown = [job for job in jobs if job not in scheduler.specs]
    if unknown:
        known = ", ".join(scheduler.specs) or "none (every schedule is disabled)"
        raise UsageError(f"unknown or disabled job {', '.join(unknown)}; jobs: {known}")
    scheduler.start()
    results = []
    queue = list(dict.fromkeys(jobs))
    with _Signals(scheduler.cancel):
        while queue and not scheduler.cancelled:
            job = queue.pop(0)
            result = scheduler.run_now(job)
            results.append((job, result))
            if result.outcome == JobOutcome.OK:
                # As in the daemon: a backup is followed by its verify.
                queue += [
                    s.name
                    for s in scheduler.specs.values()
                    if s.after == job and s.name not in queue
                ]
    notifier.wait(30)
    return results


def exit_code(results: list[tuple[str, JobResult]]) -> int:
    outcomes = {result.outcome for _, result in results}
    if outcomes <= {JobOutcome.OK}:
        return 0
    if outcomes <= {JobOutcome.OK, JobOutcome.PROBLEM}:
        return 1
    return 2 if JobOutcome.ERROR in outcomes else 1
