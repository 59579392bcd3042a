"""`sbtc-ops config show|check|sample`: the effective configuration (secrets redacted), its
validation with every problem named by layer, and a commented sample written from the model.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.redact import REDACTED

if TYPE_CHECKING:  # sbtc_ops.config loads when a command runs, not for -h
    from sbtc_ops.config import InvalidConfig, Settings

config_app = typer.Typer(help="Inspect sbtc-ops' configuration.", no_args_is_help=True)


@config_app.command("show")
def show(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Print the effective configuration, secrets redacted (its layers, in precedence order:
    docs/configuration.md)."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.config import redacted_view

    view = redacted_view(_common.load_settings())
    if json_output:
        # `ok` beside the sections (no section is named so): every document has one.
        _common.emit_json({"ok": True, **view})
        return
    _print_tree(view)


@config_app.command("check")
def check(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Validate the configuration: exit 0 valid, 1 problems (each named with the file,
    environment variable or signer config it came from), 2 a file cannot be read."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.config import InvalidConfig

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

    json_output = _common.set_json_mode(json_output)
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


def _print_tree(node: object, indent: int = 0) -> None:
    """The effective configuration as TOML (what sbtc-ops.toml would say): `true`, not
    Python's `True`; a setting with no value is a comment, since TOML has no null."""
    for line in toml_lines(node):
        _common.out.print(line, markup=False)


def toml_lines(node: object, table: tuple[str, ...] = ()) -> list[str]:
    if not isinstance(node, dict):
        return []
    lines = []
    if table and any(not isinstance(v, dict) for v in node.values()):
        lines.append(f"[{'.'.join(_toml_key(k) for k in table)}]")
    for key, value in node.items():
        if value is None:
            lines.append(f"# {_toml_key(key)} (not set)")
        elif value == REDACTED:  # a comment: the output scrubber rewrites `key = "…"` lines
            lines.append(f"# {_toml_key(key)} (set) {REDACTED}")
        elif not isinstance(value, dict):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in node.items():
        if isinstance(value, dict):
            lines += ["", *toml_lines(value, (*table, str(key)))]
    return lines


def _toml_key(key: object) -> str:
    text = str(key)
    return text if text and all(c.isalnum() or c in "_-" for c in text) else json.dumps(text)


def _toml_value(value: object) -> str:
    from sbtc_ops.config_sample import toml_value

    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if value is None:
        return '""'
    return toml_value(value if isinstance(value, bool | int | float | str) else str(value))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
