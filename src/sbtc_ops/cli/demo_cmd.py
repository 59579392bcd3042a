"""`sbtc-ops demo`: try the whole backup-and-verify cycle with nothing but sbtc-ops.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import ConfigError


def demo(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Back up and verify a generated signer database; no network, no input, nothing kept."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.devtools.demo import NEXT_STEPS, run_demo
    from sbtc_ops.devtools.standin_node import LABEL
    from sbtc_ops.verify.render import PhaseSpinner, render_terminal

    out = _common.out
    step = None if json_output else (lambda message: out.print(f"demo: {message}", markup=False))
    with PhaseSpinner() as spinner:
        result = run_demo(_postgres_settings(), step=step, phase=spinner.update)
    report = result.report
    if json_output:
        _common.emit_json(result.to_json())
    else:
        render_terminal(report, out)
        out.print(f"  the on-chain key above came from {result.chain_url}: {LABEL}", markup=False)
        out.print("demo: done; its servers and temporary files are gone.", markup=False)
        out.print("\nOn a real signer:", markup=False)
        for why, command in NEXT_STEPS:
            out.print(f"  {command}", markup=False)
            out.print(f"      {why}", markup=False, style="dim")
    if report.ok:
        return
    raise typer.Exit(2 if report.could_not_run else 1)


def _postgres_settings() -> Any:
    """Only where PostgreSQL's binaries are and who runs them come from the operator's
    configuration; a broken or absent one does not stop the demo."""
    from sbtc_ops.config import PostgresSettings

    try:
        return _common.load_settings().postgres
    except ConfigError as exc:
        _common.err.print(f"note: configuration ignored by the demo: {exc}", markup=False)
        return PostgresSettings()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
