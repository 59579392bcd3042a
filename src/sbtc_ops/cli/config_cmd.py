"""`sbtc-ops config show|check|sample`: the effective configuration (secrets redacted), its
validation with every problem named by layer, and a commented sample written from the model."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.config import InvalidConfig, Settings, redacted_view

config_app = typer.Typer(help="Inspect sbtc-ops' configuration.", no_args_is_help=True)


@config_app.command("show")
def show(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Print the effective configuration (flags > env > sbtc-ops.toml > signer config > preset)."""
    _common.set_json_mode(json_output)
    view = redacted_view(_common.load_settings())
    if json_output:
        _common.emit_json(view)
        return
    _print_tree(view, indent=0)


@config_app.command("check")
def check(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Validate the configuration: exit 0 valid, 1 problems (each named with the file,
    environment variable or signer config it came from), 2 a file cannot be read."""
    _common.set_json_mode(json_output)
    try:
        settings: Settings = _common.load_settings()
    except InvalidConfig as exc:
        _report_problems(exc, json_output)
        raise typer.Exit(1) from None
    read = _files_read(settings)
    if json_output:
        _common.emit_json({"ok": True, "problems": [], "files": read})
        return
    where = ", ".join(read) if read else "no file (defaults, environment and presets)"
    _common.out.print(f"configuration is valid: {where}", markup=False)


def _files_read(settings: Settings) -> list[str]:
    files = list(settings.source_files)
    for path in (settings.signer.config_path, settings.signer.env_file):
        if path is not None:
            files.append(str(path))
    return files


def _report_problems(exc: InvalidConfig, json_output: bool) -> None:
    if json_output:
        problems = [problem.to_json() for problem in exc.problems]
        _common.emit_json({"ok": False, "problems": problems})
        return
    count = len(exc.problems)
    _common.out.print(f"{count} problem{'s' if count != 1 else ''} in the configuration:")
    for problem in exc.problems:
        _common.out.print(f"  {problem}", markup=False)


@config_app.command("sample")
def sample(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Print a commented sbtc-ops.toml with every setting, its description, example and default
    (with --json: the same as a reference document)."""
    from sbtc_ops.config_sample import reference, sample_toml

    _common.set_json_mode(json_output)
    if json_output:
        _common.emit_json(reference())
        return
    # Plain write: the sample is data to redirect into a file, not text to wrap or highlight.
    # It is written from the settings model alone (descriptions, defaults, examples) and never
    # holds a configured value, so it bypasses the output scrubber, which would otherwise mask
    # the placeholder examples of secret settings (`api_key = "<hiro api key>"`).
    raw = sys.__stdout__ or sys.stdout
    raw.write(sample_toml())
    raw.flush()


def _print_tree(node: object, indent: int) -> None:
    pad = "  " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict):
                _common.out.print(f"{pad}{key}:", markup=False)
                _print_tree(value, indent + 1)
            else:
                _common.out.print(f"{pad}{key}: {_scalar(value)}", markup=False)


def _scalar(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "[]"
    return "-" if value is None else str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
