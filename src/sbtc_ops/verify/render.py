"""Rendering a verify report; renderers only read the report."""

from __future__ import annotations

from rich.console import Console

from sbtc_ops.progress import StepProgress
from sbtc_ops.render import CheckLine, render_checks
from sbtc_ops.results import CheckResult
from sbtc_ops.verify.checks import GIVEN_BY_HAND
from sbtc_ops.verify.report import VerifyReport

_VERDICT_STYLE = {"match": "bold green", "stale": "bold yellow"}


def render_terminal(report: VerifyReport, console: Console) -> None:
    console.print(f"verify {report.backup}", markup=False)
    render_checks(console, [(None, [_line(check) for check in report.checks])])
    verdict_style = _VERDICT_STYLE.get(report.verdict, "bold red")
    console.print(f"verdict: [{verdict_style}]{report.verdict}[/]")
    if report.failed_checks:
        console.print(f"  not passed: {', '.join(report.failed_checks)}", markup=False)
    compared = report.expected_aggregate_key or report.onchain_aggregate_key
    if report.db_aggregate_key or compared:
        label = "on-chain key" if report.expected_aggregate_key is None else GIVEN_BY_HAND
        console.print(f"  backup key   {report.db_aggregate_key or '-'}", markup=False)
        console.print(f"  {label:<12} {compared or '-'}", markup=False)
    phases = ", ".join(
        f"{name} {seconds:.1f}s" for name, seconds in report.timings.items() if "." not in name
    )
    console.print(f"  timings: {phases}", markup=False, style="dim")


def _line(check: CheckResult) -> CheckLine:
    timing = f"({check.duration_s:.2f} s)" if check.duration_s >= 0.005 else ""
    return CheckLine(check.status, check.id, check.detail, check.remediation, timing)


# The drill's phases in the order they start (drill.py's `_timed` names); "chain" is
# skipped with --expected-key.
VERIFY_PHASES = (
    "locate",
    "cluster",
    "checksum",
    "prepare",
    "restore",
    "checks",
    "chain",
    "amcheck",
)


class PhaseSpinner(StepProgress):
    """verify's progress: phases done of VERIFY_PHASES, elapsed, ETA (on a terminal, not with
    --json); each phase said at -v, its duration at -vv. `update(phase)` is the drill's
    phase callback; `bytes(description, total)` adds a byte row (see progress.StepProgress)."""

    def __init__(self) -> None:
        super().__init__("verify", VERIFY_PHASES)
