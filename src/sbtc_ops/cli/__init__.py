"""The `sbtc-ops` command line: thin; each command parses, calls one function, renders.

Command groups live in sibling modules, each exposing `register(app)`. They import the
services they call inside the command functions, on purpose: `sbtc-ops` (every `-h`, every
timer run) starts without loading the configuration model, HTTP clients, psycopg or boto3
(tests/test_cli_usage.py); each command loads only what it runs.

A command function is as long as its typer option declarations make it (`verify` has 15
options); its body parses, calls one service and renders, in a few dozen lines.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from sbtc_ops.cli import _common, _streams, globalopts, helpstyle
from sbtc_ops.errors import SbtcOpsError, UsageError, describe_os_error
from sbtc_ops.proc import note_interrupt
from sbtc_ops.redact import scrub
from sbtc_ops.termsafe import install_output_escaping

app = typer.Typer(
    name="sbtc-ops",
    help="Operational best practices for sBTC signers: backups, verified restores, audits, "
    "key custody and monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from sbtc_ops import __version__

        typer.echo(f"sbtc-ops {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="SBTC_OPS_CONFIG",
            help="sbtc-ops.toml to use (default: ./sbtc-ops.toml, then /etc/sbtc-ops/sbtc-ops.toml; "
            "before or after the command).",
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="On stderr: -v each step and every command run, -vv with timings (before or "
            "after the command).",
        ),
    ] = 0,
    metrics_textfile: Annotated[
        Path | None,
        typer.Option(
            "--metrics-textfile",
            help="Also write sbtc-ops metrics to this node_exporter textfile-collector file "
            "(before or after the command).",
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON document on stdout, nothing else (before or after the command).",
        ),
    ] = False,
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
    _common.set_json_mode(json_output)
    _refuse_root_in_the_services_environment(ctx.invoked_subcommand)


def _refuse_root_in_the_services_environment(command: str | None) -> None:
    """Root where the environment names the unprivileged service's sandbox namespace (a
    `docker compose exec` without -u): what it wrote in the shared state and backups would
    be root's, which the service cannot use, and root there has no capability to sandbox a
    drill. Only the command that prepares that namespace runs as root there."""
    from sbtc_ops.config import SANDBOX_USERNS_VARIABLE

    if os.geteuid() != 0 or not os.environ.get(SANDBOX_USERNS_VARIABLE):
        return
    if command in (None, "sandbox-userns", "version", "man"):
        return
    raise UsageError(
        f"running as root in the sbtc-ops service's environment ({SANDBOX_USERNS_VARIABLE} "
        "is set): run commands as the service user",
        hint="docker compose exec -u 10001:10001 sbtc-ops sbtc-ops …",
    )


def _register_commands() -> None:
    from sbtc_ops.cli import (
        attest_cmd,
        audit_cmd,
        backup_cmd,
        chain_cmd,
        clarity_cmd,
        config_cmd,
        demo_cmd,
        init_cmd,
        key_cmd,
        man_cmd,
        sandbox_cmd,
        schema_cmd,
        serve_cmd,
        upgrade_cmd,
        verify_cmd,
        version_cmd,
    )

    for module in (
        demo_cmd,
        init_cmd,
        config_cmd,
        clarity_cmd,
        chain_cmd,
        backup_cmd,
        verify_cmd,
        attest_cmd,
        audit_cmd,
        key_cmd,
        schema_cmd,
        serve_cmd,
        sandbox_cmd,
        upgrade_cmd,
        version_cmd,
        man_cmd,
    ):
        module.register(app)


_register_commands()


def command_tree() -> typer.core.TyperCommand | typer.core.TyperGroup:
    """The click command tree to run: help restyled, global options accepted anywhere."""
    root = helpstyle.styled_command(app)
    globalopts.share_global_options(root)
    return root


def _json_requested() -> bool:
    """--json was asked for: set by the command, or present on a command line that failed to
    parse (a usage error happens before the command could say so)."""
    if _common.current().json_mode:
        return True
    args = sys.argv[1:]
    if "--" in args:
        args = args[: args.index("--")]
    return "--json" in args


def _fail(message: str, code: int) -> NoReturn:
    message = scrub(message)
    if _json_requested():
        _common.emit_json({"ok": False, "error": message})
    _common.print_error(message)
    sys.exit(code)


_interrupted_by_signal = False


def _signal_as_interrupt(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C so every `finally` (throwaway
    # clusters, temp files, locks) runs. Remember it: typer turns KeyboardInterrupt into a
    # silent exit code 130, and the interruption must still be reported (JSON document too).
    global _interrupted_by_signal
    _interrupted_by_signal = True
    note_interrupt()  # in case this exception is swallowed where it lands (proc.py)
    raise KeyboardInterrupt


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    # Our interrupt landed where Python ignores exceptions (an at-fork callback): it is
    # noted (proc.note_interrupt) and raised at the next wait, so nothing to print here.
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _interrupted_by_signal:
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    signal.signal(signal.SIGTERM, _signal_as_interrupt)
    signal.signal(signal.SIGINT, _signal_as_interrupt)
    sys.unraisablehook = _unraisable
    _streams.guard_closed_pipes()
    _common.install_output_scrubbing()
    install_output_escaping()
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
        _common.print_error(exc)
        sys.exit(exc.exit_code)


def _run() -> None:
    # Not standalone: typer would turn Ctrl-C/SIGTERM into its own exit before we could
    # report it (and print the JSON error document with --json).
    try:
        result = command_tree()(standalone_mode=False)
    except SbtcOpsError as exc:
        _fail(str(exc), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except OSError as exc:
        # The last net for a fault of the host (disk full, I/O error, a pipe closed) that no
        # layer turned into its own message: still `error: …`, exit 2, one JSON document.
        _fail(describe_os_error(exc), 2)
    except typer.TyperException as exc:  # usage errors: exit 2 with the parser's message
        if _json_requested():
            _common.emit_json({"ok": False, "error": scrub(exc.format_message())})
        _show_usage_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001  # a bug: one JSON document, exit 2, no bare crash
        _internal_error(exc)
    if _interrupted_by_signal:
        _interrupted()
    sys.exit(result if isinstance(result, int) else 0)


def _internal_error(exc: Exception) -> NoReturn:
    """An unexpected exception is a bug of sbtc-ops: said as such (the traceback with -v),
    with --json as the one document, exit 2 (the job could not be done)."""
    import traceback

    if _common.current().verbose:
        _common.err.print(scrub(traceback.format_exc()), markup=False, highlight=False)
    _fail(f"internal error (a bug in sbtc-ops; -v shows where): {type(exc).__name__}: {exc}", 2)


def _show_usage_error(exc: typer.TyperException) -> None:
    """The parser's message in sbtc-ops' own style (`error: …`, like every other failure),
    then the command's usage line and where help is. typer's public base class has no
    `ctx`; the click-derived usage errors it raises (typer vendors click) carry one."""
    _common.print_error(scrub(exc.format_message()))
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        usage = " ".join(ctx.get_usage().split()).removeprefix("Usage: ")
        _common.err.print(f"  usage: {usage}  ({ctx.command_path} -h for help)", markup=False)


def _interrupted() -> NoReturn:
    if _json_requested():
        _common.emit_json({"ok": False, "error": "interrupted"})
    _common.err.print("interrupted; cleaned up", markup=False)
    sys.exit(130)
