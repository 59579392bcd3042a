"""`sbtc-ops audit`: check the host against the best-practice page, explain, say how to fix.

`sbtc-ops audit [--only AREA,…]` runs every area; `sbtc-ops audit firewall --probe HOST[:PORTS]`
scans a host from here instead. Exit 0 when nothing is at or above --fail-on, 1 otherwise,
2 when the audit cannot run.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError
from sbtc_ops.results import Status

if TYPE_CHECKING:
    from sbtc_ops.audit.probe import ProbeSpec

audit_app = typer.Typer(
    help="Audit this host against the sBTC signer best practices (exit 1 on findings).",
    invoke_without_command=True,
    no_args_is_help=False,
)


class FailOn(StrEnum):
    """The statuses --fail-on can name (a subset of results.Status, same values)."""

    WARN = Status.WARN.value
    FAIL = Status.FAIL.value


ONLY_OPTION = typer.Option(
    "--only", help="Comma-separated areas to audit (default: all), e.g. access,firewall."
)
HTML_OPTION = typer.Option(
    "--html", help="Also write a self-contained HTML report (mode 0600) for a second reviewer."
)
FAIL_ON_OPTION = typer.Option(
    "--fail-on", help="Exit 1 when a finding is at or above this level.", case_sensitive=False
)
ROOT_OPTION = typer.Option(
    "--root",
    help="Audit the file tree under this directory (a mounted image); commands are not run.",
)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    only: Annotated[str | None, ONLY_OPTION] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
    html: Annotated[Path | None, HTML_OPTION] = None,
    fail_on: Annotated[FailOn, FAIL_ON_OPTION] = FailOn.FAIL,
    root: Annotated[Path, ROOT_OPTION] = Path("/"),
    list_checks: Annotated[
        bool, typer.Option("--list", help="List the checks (id, area, severity, title); run none.")
    ] = False,
) -> None:
    """Run the audit (all areas, or --only some)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"json": json_output, "html": html, "fail_on": fail_on, "root": root}
        return
    json_output = _common.set_json_mode(json_output)
    areas = [a for a in (only or "").split(",") if a.strip()]
    if list_checks:
        _list(areas, json_output)
        return
    _audit_and_exit(areas, json_output, html, fail_on, root, probe=None)


@audit_app.command("firewall")
def firewall(
    ctx: typer.Context,
    probe: Annotated[
        str | None,
        typer.Option(
            "--probe",
            help="Instead of reading local rules, TCP-connect-scan HOST[:PORTS] from here "
            "(PORTS like 22,4122,9000-9010; default: the signer host's reference ports).",
        ),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.05, max=10, help="Seconds per port.")
    ] = 1.0,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, max=120, help="Seconds for the whole probe.")
    ] = 20.0,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
    html: Annotated[Path | None, HTML_OPTION] = None,
    fail_on: Annotated[FailOn | None, FAIL_ON_OPTION] = None,
    root: Annotated[Path | None, ROOT_OPTION] = None,
) -> None:
    """Audit the firewall area, or probe a host's reachable ports with --probe."""
    parent = ctx.obj or {}
    json_output = json_output or bool(parent.get("json"))
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.audit.probe import ProbeSpec

    spec = ProbeSpec(probe, connect_timeout, deadline) if probe is not None else None
    _audit_and_exit(
        ["firewall"],
        json_output,
        html or parent.get("html"),
        fail_on or parent.get("fail_on") or FailOn.FAIL,
        root or parent.get("root") or Path("/"),
        probe=spec,
    )


def _list(areas: list[str], json_output: bool) -> None:
    from sbtc_ops.audit.framework import select_checks
    from sbtc_ops.audit.render import catalogue, render_catalogue

    checks = select_checks(areas)
    if json_output:
        _common.emit_json({"ok": True, "checks": catalogue(checks)})
    else:
        render_catalogue(checks, _common.out)


def _audit_and_exit(
    areas: list[str],
    json_output: bool,
    html: Path | None,
    fail_on: FailOn,
    root: Path,
    probe: ProbeSpec | None,
) -> None:
    from sbtc_ops.audit.render import render_terminal, report_document, write_html
    from sbtc_ops.audit.service import audit_host

    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    settings = _common.load_settings()
    report = audit_host(settings, areas=areas, root=root, probe=probe)
    if html is not None:
        try:
            write_html(report, html)
        except OSError as exc:
            raise UsageError(f"--html {html}: cannot write: {exc.strerror}") from None
    problems = report.at_or_above(Status(fail_on.value))
    if json_output:
        doc = report_document(report)
        doc["ok"] = not problems
        doc["fail_on"] = fail_on.value
        _common.emit_json(doc)
    else:
        render_terminal(report, _common.out)
        if html is not None:
            _common.err.print(f"HTML report written to {html}", markup=False)
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
