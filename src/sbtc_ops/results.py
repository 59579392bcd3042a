"""The result object every check returns (verify, audit, key custody).

Renderers (terminal, JSON, HTML, metrics) only read these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ParamSpec

P = ParamSpec("P")


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def style(self) -> str:
        """The rich style terminal renderers show this status in."""
        return _STYLES[self]

    @property
    def is_problem(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


_STYLES = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "red",
    Status.SKIP: "dim",
}

_SYMBOLS = {
    Status.PASS: "✓",
    Status.WARN: "!",
    Status.FAIL: "✗",
    Status.SKIP: "-",
    Status.ERROR: "✗",
}


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: an id, a status, a one-line detail and, when not passing, how to fix it."""

    id: str
    status: Status
    detail: str
    remediation: str | None = None
    section: str | None = None
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["status"] = self.status.value
        doc["duration_s"] = round(self.duration_s, 3)
        return doc

    def timed(self, seconds: float) -> CheckResult:
        return CheckResult(
            self.id, self.status, self.detail, self.remediation, self.section, seconds, self.data
        )


class Stopwatch:
    """Started when made; `elapsed()` is the seconds since (a monotonic clock). The one way
    sbtc-ops times its work: checks' `duration_s`, the drill's and the backup's phases."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start


def timed_check(check: Callable[P, CheckResult], *args: P.args, **kwargs: P.kwargs) -> CheckResult:
    """`check(*args, **kwargs)`, its duration stamped on the result."""
    watch = Stopwatch()
    result = check(*args, **kwargs)
    return result.timed(watch.elapsed())
