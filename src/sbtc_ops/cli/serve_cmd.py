"""`sbtc-ops serve` (the daemon, or `--once JOB` for timers) and `sbtc-ops history`.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError
from sbtc_ops.history import NOTHING_RECORDED, JobName, check_job_name, history_rows

BIND_OPTION = typer.Option(
    "--bind",
    help="HOST:PORT for /metrics, /healthz, /readyz and the status page "
    "(default: serve.bind, 127.0.0.1:9185).",
)
ONCE_OPTION = typer.Option(
    "--once",
    help="Run this job now as the daemon would (recorded, notified), then exit; repeatable. "
    f"Jobs: {', '.join(JobName)}. For systemd timers or cron.",
)


class LogFormatChoice(StrEnum):
    TEXT = "text"
    JSON = "json"


LOG_FORMAT_OPTION = typer.Option(
    "--log-format",
    help="Each finished job run is one line on stderr: text, or json (JSON lines).",
    case_sensitive=False,
)


def serve(
    bind: Annotated[str | None, BIND_OPTION] = None,
    once: Annotated[list[str] | None, ONCE_OPTION] = None,
    log_format: Annotated[LogFormatChoice, LOG_FORMAT_OPTION] = LogFormatChoice.TEXT,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Run backups, verification, audits and chain checks on schedule; serve metrics and
    status. With --once, run the named jobs now and exit (--json: one document of their runs)."""
    json_output = _common.set_json_mode(json_output)
    if json_output and not once:
        raise UsageError(
            "--json is for serve --once; the daemon logs each job run as a JSON line "
            "with --log-format json"
        )
    from sbtc_ops.serve.daemon import serve as run_daemon

    settings = _common.load_settings()
    config_path = _common.current().config_path
    if once:
        _serve_once(settings, list(once), json_output)
    from sbtc_ops.serve.joblog import LogFormat

    code = run_daemon(
        settings, bind=bind, config_path=config_path, log_format=LogFormat(log_format.value)
    )
    raise typer.Exit(code)


def _serve_once(settings: Any, jobs: list[str], json_output: bool) -> None:
    from sbtc_ops.serve.daemon import exit_code, run_once

    results = run_once(settings, jobs, _common.current().config_path)
    code = exit_code(results)
    if json_output:
        runs = [
            {"job": job, "outcome": r.outcome, "summary": r.summary, "data": r.data}
            for job, r in results
        ]
        _common.emit_json({"ok": code == 0, "runs": runs})
    for job, result in results:
        colour = "green" if result.outcome == "ok" else "red"
        _common.err.print(
            f"{_common.plain(job)}: [{colour}]{_common.plain(result.outcome)}[/] "
            f"{_common.plain(result.summary)}"
        )
    raise typer.Exit(code)


def history(
    job: Annotated[
        str | None, typer.Option("--job", help="Only runs of this job (e.g. backup, verify).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs, newest first.")] = 50,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Job runs recorded in the state database (by serve, serve --once and the CLI's backup
    and verify)."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.state import StateStore

    check_job_name(job)
    settings = _common.load_settings()
    with StateStore.open(settings.state_dir) as store:
        rows = history_rows(store, job, limit)
    if json_output:
        _common.emit_json({"ok": True, "runs": rows})
        return
    if not rows:
        _common.err.print(NOTHING_RECORDED, markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("started", "job", "outcome", "duration", "summary"):
        table.add_column(column)
    for row in rows:
        duration = f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "-"
        colour = (
            "green"
            if row["outcome"] == "ok"
            else "yellow"
            if row["outcome"] == "running"
            else "red"
        )
        table.add_row(
            row["started_at"].replace("T", " ")[:19],
            _common.cell(row["job"] + (" (cli)" if row["origin"] == "cli" else "")),
            f"[{colour}]{_common.plain(row['outcome'])}[/]",
            duration,
            _common.cell(row["summary"] or ""),
        )
    _common.out.print(table)


def register(app: typer.Typer) -> None:
    """Add `serve` and `history` to the main app."""
    app.command("serve")(serve)
    app.command("history")(history)
