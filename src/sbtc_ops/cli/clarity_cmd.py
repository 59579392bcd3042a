"""`sbtc-ops clarity decode`: a serialized Clarity value (or a whole call-read answer) as text.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError

MAX_INPUT_CHARS = 8 * 1024 * 1024
"""Twice the hex of the largest serialized value a node reads (2 MiB), room for JSON."""

clarity_app = typer.Typer(help="Work with Clarity values.", no_args_is_help=True)


@clarity_app.command("decode")
def decode(
    hex_value: Annotated[
        str | None,
        typer.Argument(
            metavar="HEX",
            help="Serialized value as hex (0x optional) or a call-read JSON answer; "
            "read from stdin when omitted or '-'.",
        ),
    ] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Decode a Clarity value, e.g. the result of `curl …/v2/contracts/call-read/…`."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.clarity import ClarityError
    from sbtc_ops.stacks import decode_hex_or_answer

    if hex_value is None or hex_value == "-":
        if sys.stdin.isatty():
            raise UsageError("give the hex as an argument, or pipe it (or a call-read answer) in")
        hex_value = sys.stdin.read(MAX_INPUT_CHARS + 1)
        if len(hex_value) > MAX_INPUT_CHARS:
            raise UsageError(f"input larger than {MAX_INPUT_CHARS} characters: not one value")
    try:
        value = decode_hex_or_answer(hex_value)
    except ClarityError as exc:
        raise UsageError(f"not a valid Clarity value: {exc}") from None
    if json_output:
        _common.emit_json(
            {
                "ok": True,
                "type": str(value.clarity_type),
                "text": value.to_text(),
                "value": value.to_json(),
                "hex": value.to_hex(),
            }
        )
        return
    _common.out.print(value.to_text(), markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(clarity_app, name="clarity")
