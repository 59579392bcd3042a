"""The `sbtc-ops` command line: thin; each command parses, calls one function, renders.

Command groups live in sibling modules, each exposing `register(app)`.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer._click.exceptions import ClickException  # typer vendors click

from sbtc_ops import __version__
from sbtc_ops.cli import _common
from sbtc_ops.errors import ProblemFound, SbtcOpsError

app = typer.Typer(
    name="sbtc-ops",
    help="Operational best practices for sBTC signers: backups, verified restores, audits, "
    "key custody and monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sbtc-ops {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="SBTC_OPS_CONFIG",
            help="sbtc-ops.toml to use (default: ./sbtc-ops.toml, then /etc/sbtc-ops/sbtc-ops.toml).",
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output on stderr.")
    ] = 0,
    metrics_textfile: Annotated[
        Path | None,
        typer.Option(
            "--metrics-textfile",
            help="Also write sbtc-ops metrics to this node_exporter textfile-collector file.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    _common.reset(
        _common.RunContext(config_path=config, verbose=verbose, metrics_textfile=metrics_textfile)
    )
    _common.configure_logging(verbose)


def _register_commands() -> None:
    from sbtc_ops.cli import (
        audit_cmd,
        backup_cmd,
        chain_cmd,
        clarity_cmd,
        config_cmd,
        init_cmd,
        key_cmd,
        serve_cmd,
        verify_cmd,
    )

    for module in (
        init_cmd,
        config_cmd,
        clarity_cmd,
        chain_cmd,
        backup_cmd,
        verify_cmd,
        audit_cmd,
        key_cmd,
        serve_cmd,
    ):
        module.register(app)


_register_commands()


def _fail(message: str, code: int) -> NoReturn:
    if _common.current().json_mode:
        _common.emit_json({"ok": False, "error": message})
    _common.err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    sys.exit(code)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C so every `finally` (throwaway
    # clusters, temp files, locks) runs.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        _run()
    finally:
        _write_metrics_textfile()


def _write_metrics_textfile() -> None:
    """--metrics-textfile: after any command, the state's metrics for node_exporter."""
    path = _common.current().metrics_textfile
    if path is None:
        return
    from sbtc_ops.serve.metrics import write_textfile_for_cli

    try:
        write_textfile_for_cli(path, _common.load_settings)
    except SbtcOpsError as exc:
        # stderr only: with --json the command's one document is already on stdout.
        _common.err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)


def _run() -> None:
    # Not standalone: typer would turn Ctrl-C/SIGTERM into its own exit before we could
    # report it (and print the JSON error document with --json).
    try:
        result = app(standalone_mode=False)
    except SbtcOpsError as exc:
        _fail(str(exc), exc.exit_code)
    except ProblemFound as exc:
        _fail(str(exc), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        if _common.current().json_mode:
            _common.emit_json({"ok": False, "error": "interrupted"})
        _common.err.print("interrupted; cleaned up", markup=False)
        sys.exit(130)
    except ClickException as exc:  # usage errors: exit 2 with click's message
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
