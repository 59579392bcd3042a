"""How long the drill's phases and checks take: one clock for all of them.

A drill reports `timings` (seconds per phase: locate, cluster, checksum, prepare, restore,
checks, amcheck, chain, total, …; a phase entered twice adds up) and each check's
`duration_s`; both are measured with results.Stopwatch (results.timed_check for a check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sbtc_ops.results import Stopwatch


@dataclass
class Phases:
    """The drill's phase timings (the report's `timings`), and the hook told as each phase
    starts (the CLI's progress line, serve's job status)."""

    timings: dict[str, float] = field(default_factory=dict)
    hook: Callable[[str], Any] | None = None

    @contextmanager
    def phase(self, name: str, *, announce: bool = True) -> Iterator[Stopwatch]:
        """Time the block as `name` (announced to the hook first, unless told not to)."""
        if announce and self.hook is not None:
            self.hook(name)
        watch = Stopwatch()
        try:
            yield watch
        finally:
            self.add(name, watch.elapsed())

    def announce(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def add(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds
