"""The result object every check returns (verify, audit, key custody).

Renderers (terminal, JSON, HTML, metrics) only read these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


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


def run_timed(check: Callable[[], CheckResult]) -> CheckResult:
    """Run one check and stamp its duration on the result."""
    start = time.perf_counter()
    result = check()
    return result.timed(time.perf_counter() - start)


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed: ...; elapsed()` gives seconds since entry."""
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start
