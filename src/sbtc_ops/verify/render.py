"""Rendering a verify report; renderers only read the report."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.status import Status as RichStatus

from sbtc_ops.results import Status
from sbtc_ops.verify.drill import VerifyReport

_VERDICT_STYLE = {"match": "bold green", "stale": "bold yellow"}


def render_terminal(report: VerifyReport, console: Console) -> None:
    console.print(f"verify {report.backup}", markup=False)
    for check in report.checks:
        style = check.status.style
        timing = f" ({check.duration_s:.2f} s)" if check.duration_s >= 0.005 else ""
        console.print(f"  [{style}]{check.status.symbol}[/] {check.id:<30} ", end="")
        console.print(f"{check.detail}{timing}", markup=False)
        if check.remediation and check.status != Status.PASS and check.status != Status.SKIP:
            console.print(f"      → {check.remediation}", markup=False, style="dim")
    verdict_style = _VERDICT_STYLE.get(report.verdict, "bold red")
    console.print(f"verdict: [{verdict_style}]{report.verdict}[/]")
    if report.failed_checks:
        console.print(f"  not passed: {', '.join(report.failed_checks)}", markup=False)
    if report.db_aggregate_key or report.onchain_aggregate_key:
        label = "expected key" if report.key_source == "expected" else "on-chain key"
        console.print(f"  backup key   {report.db_aggregate_key or '-'}", markup=False)
        console.print(f"  {label:<12} {report.onchain_aggregate_key or '-'}", markup=False)
    phases = ", ".join(
        f"{name} {seconds:.1f}s" for name, seconds in report.timings.items() if "." not in name
    )
    console.print(f"  timings: {phases}", markup=False, style="dim")


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
