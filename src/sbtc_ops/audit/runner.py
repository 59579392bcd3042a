"""Running an audit: every selected check concurrently under a supervisor with timeouts,
each outcome turned into a scrubbed Finding."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbtc_ops.audit.registry import Check, Finding, Outcome, Skip, area_rank
from sbtc_ops.audit.report import AuditReport
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import CommandTimeout, EvidenceError
from sbtc_ops.results import Status, Stopwatch

log = logging.getLogger(__name__)


def run_audit(
    ctx: HostContext,
    checks: Sequence[Check],
    *,
    concurrency: int | None = None,
    check_timeout_s: float | None = None,
) -> AuditReport:
    """Run checks concurrently, each bounded by its timeout; never raises for a check."""
    started_at = datetime.now(UTC)
    watch = Stopwatch()
    run = _Run(
        ctx,
        concurrency or ctx.settings.audit.concurrency,
        check_timeout_s or ctx.settings.audit.check_timeout_s,
    )
    try:
        run.supervise(checks)
    finally:
        # Nothing outlives the audit: commands of abandoned checks, or all on Ctrl-C.
        kill_all = getattr(ctx.runner, "kill_all", None)
        if callable(kill_all):
            kill_all()
    findings = [run.results[item.id] for item in checks]
    areas = sorted({item.area for item in checks}, key=area_rank)
    return AuditReport(findings, str(ctx.root), started_at, watch.elapsed(), areas)


class _Run:
    """Starts checks up to the concurrency limit; turns those past their timeout into errors."""

    def __init__(self, ctx: HostContext, limit: int, default_timeout: float) -> None:
        self.ctx = ctx
        self.limit = limit
        self.default_timeout = default_timeout
        self.results: dict[str, Finding] = {}
        self.cond = threading.Condition()

    def worker(self, item: Check) -> None:
        finding = _execute(self.ctx, item)
        with self.cond:
            self.results.setdefault(item.id, finding)  # a late result after a timeout is dropped
            self.cond.notify_all()

    def supervise(self, checks: Sequence[Check]) -> None:
        pending = deque(checks)
        active: dict[str, tuple[Check, float]] = {}
        with self.cond:
            while pending or active:
                while pending and len(active) < self.limit:
                    item = pending.popleft()
                    active[item.id] = (item, time.monotonic())
                    # Daemon threads: a check stuck past its timeout must not keep the CLI alive.
                    threading.Thread(
                        target=self.worker, args=(item,), name=f"audit-{item.id}", daemon=True
                    ).start()
                next_deadline = self._reap(active)
                if active and not any(cid in self.results for cid in active):
                    self.cond.wait(timeout=max(0.0, next_deadline - time.monotonic()))

    def _reap(self, active: dict[str, tuple[Check, float]]) -> float:
        """Drop finished checks, time out overdue ones; returns the next deadline."""
        now = time.monotonic()
        next_deadline = now + 1.0
        for check_id, (item, began) in list(active.items()):
            timeout = item.timeout_s or self.default_timeout
            if check_id in self.results:
                del active[check_id]
            elif now - began >= timeout:
                outcome = Outcome(Status.ERROR, f"did not finish within {timeout:g}s")
                self.results[check_id] = _finding(self.ctx, item, outcome, now - began)
                del active[check_id]
            else:
                next_deadline = min(next_deadline, began + timeout)
        return next_deadline


def _execute(ctx: HostContext, item: Check) -> Finding:
    watch = Stopwatch()
    try:
        outcome = item.func(ctx)
    except Skip as exc:
        outcome = Outcome(Status.SKIP, str(exc))
    except (CommandTimeout, EvidenceError) as exc:
        outcome = Outcome(Status.ERROR, str(exc))
    except Exception as exc:
        log.debug("check %s raised", item.id, exc_info=True)
        outcome = Outcome(Status.ERROR, f"check could not run: {type(exc).__name__}: {exc}")
    return _finding(ctx, item, outcome, watch.elapsed())


def _finding(ctx: HostContext, item: Check, outcome: Outcome, seconds: float) -> Finding:
    needs_fix = outcome.status in (Status.WARN, Status.FAIL, Status.ERROR)
    remediation = (outcome.remediation or item.remediation) if needs_fix else None
    return Finding(
        id=item.id,
        status=outcome.status,
        detail=ctx.scrub(outcome.detail),
        remediation=ctx.scrub(remediation) if remediation else None,
        section=item.section,
        duration_s=seconds,
        data=_scrub_data(ctx, outcome.data),
        area=item.area,
        title=item.title,
        severity=item.severity.value,
        rationale=item.rationale,
    )


def _scrub_data(ctx: HostContext, value: Any) -> Any:
    if isinstance(value, str):
        return ctx.scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub_data(ctx, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_data(ctx, v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
