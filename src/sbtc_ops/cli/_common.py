"""What every command shares: the run context, output on the right stream, JSON documents.

Contract (docs/architecture.md, "Contracts"): with --json, stdout carries one JSON document
and nothing else; logs, progress and messages go to stderr. No secret reaches either: the
JSON document, log records and everything written to stdout and stderr pass through
sbtc_ops.redact.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from sbtc_ops import progress, redact
from sbtc_ops.redact import scrub_data
from sbtc_ops.render import make_console

# Human output goes to stderr only when it is a message; reports go to stdout.
# Wrapped to the terminal; piped, full width (never cut at 80 columns).
out: Console = make_console()
err: Console = make_console(stderr=True)


@dataclass
class RunContext:
    """The global options, given before or after the command name (cli/globalopts.py)."""

    config_path: Path | None = None
    verbose: int = 0
    json_mode: bool = False
    metrics_textfile: Path | None = None
    discovery_noted: bool = False  # the "running on discovered settings" note is said once


_CURRENT = RunContext()


def current() -> RunContext:
    return _CURRENT


def reset(ctx: RunContext) -> None:
    global _CURRENT
    _CURRENT = ctx


def set_json_mode(enabled: bool) -> bool:
    """Commands call this first with their own --json so errors are rendered as JSON on
    stdout too (and no progress is drawn); returns whether JSON is wanted (the command's
    --json, or the global one given before the command name)."""
    _CURRENT.json_mode = _CURRENT.json_mode or enabled
    progress.configure(quiet=_CURRENT.json_mode)
    return _CURRENT.json_mode


def print_error(message: object, console: Console | None = None) -> None:
    """`error: <message>` on stderr; the message is shown as is, never read as Rich markup
    (it carries user input: paths, URLs, arguments, server answers)."""
    line = Text("error:", style="bold red")
    line.append(f" {message}")
    (console or err).print(line, highlight=False)


def plain(value: object) -> str:
    """`value` escaped for a Rich markup string: user text is never markup."""
    return escape(str(value))


def cell(value: object) -> Text:
    """A Rich table cell showing `value` literally (Table reads plain strings as markup)."""
    return Text(str(value))


def emit_json(document: Any) -> None:
    """Print the single JSON document of a --json run."""
    plain = json.loads(json.dumps(document, default=str))
    sys.stdout.write(json.dumps(scrub_data(plain), indent=2, sort_keys=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


def load_settings(**overrides: Any) -> Any:
    """Settings for this run: global --config plus the command's own flags as overrides."""
    # Imported when a command runs, not for -h (pydantic, the settings model).
    from sbtc_ops.discover.load import load_for_command

    # With no configuration at all, the deployment is discovered here (never while loading).
    settings, discovered = load_for_command(_CURRENT.config_path, overrides)
    weak = redact.weak_secrets_warning()  # registered by loading; said once per run
    if weak:
        err.print(weak, markup=False)
    if discovered and not _CURRENT.discovery_noted:
        # stderr: with --json, stdout carries only the command's document.
        err.print(
            f"note: no sbtc-ops.toml found; running on settings discovered from the compose "
            f"project in {discovered.compose_dir} (`sbtc-ops init` writes them down; "
            f"SBTC_OPS_NO_DISCOVERY=1 turns discovery off)",
            markup=False,
        )
        _CURRENT.discovery_noted = True
    return settings


def configure_logging(verbose: int) -> None:
    """-v: each step and every command run; -vv: with timings and debug logs (progress.py)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    progress.configure(verbosity=verbose)
    if verbose:
        progress.echo_commands()
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h, progress.LineHandler) for h in root.handlers):
        root.addHandler(progress.LineHandler())
    # Libraries log request URLs and headers at debug level; keep them quiet.
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_output_scrubbing() -> None:
    """stdout and stderr of this process through sbtc_ops.redact.ScrubbingStream."""
    redact.install_output_scrubbing()


JSON_OPTION = typer.Option("--json", help="Print one JSON document on stdout, nothing else.")

# The backup location(s) a command writes to or reads from: `--repo`, as pgBackRest and borg
# users say. `backup --to` reads right and stays a visible alias (BACKUP_REPO_OPTION); the
# commands that read from a location accept `--to` as a hidden, deprecated spelling
# (DEPRECATED_TO_OPTION, merged by `repositories`), so older scripts keep working.
REPO_HELP = "Backup location: a directory or s3://bucket/prefix (repeatable; default: the config)."
REPO_OPTION = typer.Option("--repo", help=REPO_HELP)
BACKUP_REPO_OPTION = typer.Option("--repo", "--to", help=REPO_HELP)
DEPRECATED_TO_OPTION = typer.Option("--to", hidden=True, help="Deprecated: use --repo.")


def repositories(repo: list[str] | None, deprecated_to: list[str] | None) -> list[str] | None:
    """The locations a command was given (None: the configured ones); --to says it is
    deprecated on stderr."""
    if deprecated_to:
        err.print("note: --to is deprecated here; use --repo (same meaning)", markup=False)
    return [*(repo or []), *(deprecated_to or [])] or None


def deprecated_spelling(old: str, new: str) -> None:
    """A renamed option still accepted: say so on stderr (stdout may carry a JSON document)."""
    err.print(f"note: {old} is deprecated; use {new} (same meaning)", markup=False)
