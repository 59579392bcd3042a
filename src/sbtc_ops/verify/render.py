"""Rendering a verify report; renderers only read the report."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.status import Status as RichStatus

from sbtc_ops.render import CheckLine, render_checks
from sbtc_ops.results import CheckResult
from sbtc_ops.verify.drill import VerifyReport

_VERDICT_STYLE = {"match": "bold green", "stale": "bold yellow"}


def render_terminal(report: VerifyReport, console: Console) -> None:
    console.print(f"verify {report.backup}", markup=False)
    render_checks(console, [(None, [_line(check) for check in report.checks])])
    verdict_style = _VERDICT_STYLE.get(report.verdict, "bold red")
    console.print(f"verdict: [{verdict_style}]{report.verdict}[/]")
    if report.db_aggregate_key or report.onchain_aggregate_key:
        console.print(f"  backup key   {report.db_aggregate_key or '-'}", markup=False)
        console.print(f"  on-chain key {report.onchain_aggregate_key or '-'}", markup=False)
    phases = ", ".join(
        f"{name} {seconds:.1f}s" for name, seconds in report.timings.items() if "." not in name
    )
    console.print(f"  timings: {phases}", markup=False, style="dim")


def _line(check: CheckResult) -> CheckLine:
    timing = f"({check.duration_s:.2f} s)" if check.duration_s >= 0.005 else ""
    return CheckLine(check.status, check.id, check.detail, check.remediation, timing)


class PhaseSpinner:
    """A spinner on stderr naming the current phase (only on a terminal)."""

    def __init__(self) -> None:
        self._status: RichStatus | None = None

    def __enter__(self) -> PhaseSpinner:
        if sys.stderr.isatty():
            self._status = RichStatus("verifying…", console=Console(stderr=True))
            self._status.start()
        return self

    def update(self, phase: str) -> Any:
        if self._status is not None:
            self._status.update(f"verify: {phase}…")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()
