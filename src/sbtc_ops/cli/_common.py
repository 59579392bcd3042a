"""What every command shares: the run context, output on the right stream, JSON documents.

Contract (DESIGN.md): with --json, stdout carries one JSON document and nothing else;
logs, progress and messages go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

# Human output goes to stderr only when it is a message; reports go to stdout.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class RunContext:
    """Global options given before the command name."""

    config_path: Path | None = None
    verbose: int = 0
    json_mode: bool = False
    metrics_textfile: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_CURRENT = RunContext()


def current() -> RunContext:
    return _CURRENT


def reset(ctx: RunContext) -> None:
    global _CURRENT
    _CURRENT = ctx


def set_json_mode(enabled: bool) -> None:
    """Commands call this first so errors are rendered as JSON on stdout too."""
    _CURRENT.json_mode = enabled


def emit_json(document: Any) -> None:
    """Print the single JSON document of a --json run."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def load_settings(**overrides: Any) -> Any:
    """Settings for this run: global --config plus the command's own flags as overrides."""
    from sbtc_ops.config import load_settings as _load

    settings = _load(config_path=_CURRENT.config_path, overrides=overrides)
    if settings.discovered_from and not _CURRENT.extra.get("discovery_noted"):
        # stderr: with --json, stdout carries only the command's document.
        err.print(
            f"note: no sbtc-ops.toml found; running on settings discovered from the compose "
            f"project in {settings.discovered_from} (`sbtc-ops init` writes them down)",
            markup=False,
        )
        _CURRENT.extra["discovery_noted"] = True
    return settings


def exit_with(code: int) -> None:
    raise typer.Exit(code)


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Libraries log request URLs and headers at debug level; keep them quiet.
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


JSON_OPTION = typer.Option("--json", help="Print one JSON document on stdout, nothing else.")
