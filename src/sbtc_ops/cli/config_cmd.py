"""`sbtc-ops config show`: the effective configuration, every secret redacted."""

from __future__ import annotations

from typing import Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.config import redacted_view

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
