"""The global options (-c/--config, -v/--verbose, --metrics-textfile, --json), accepted before
or after the command name: `sbtc-ops -v backup --json` and `sbtc-ops backup -v --json` mean
the same.

click binds an option to the command it follows. Rather than rewrite argv (fragile: option
values that look like commands, `--`, counters), the options are declared once, on the root
callback (cli/__init__.py), and a copy of each is attached to every command of the tree. A
copy is hidden from the command's own help (the root's help and the manual page say they
work anywhere) and records what it was given in the run context (cli/_common.RunContext),
which the root callback has reset before any command's options are parsed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption

from sbtc_ops.cli import _common
from sbtc_ops.cli.helpstyle import walk

# Parameter name (on the root callback) → how a value given after the command is recorded.


def _config(value: Path | None) -> None:
    if value is not None:
        _common.current().config_path = value


def _verbose(value: int) -> None:
    if value:
        ctx = _common.current()
        ctx.verbose += value
        _common.configure_logging(ctx.verbose)


def _metrics_textfile(value: Path | None) -> None:
    if value is not None:
        _common.current().metrics_textfile = value


def _json(value: bool) -> None:
    if value:
        _common.set_json_mode(True)


RECORDERS: dict[str, Callable[[Any], None]] = {
    "config": _config,
    "verbose": _verbose,
    "metrics_textfile": _metrics_textfile,
    "json_output": _json,
}


def share_global_options(root: TyperCommand | TyperGroup) -> None:
    """Attach a copy of each global option of `root` to every command below it that does not
    declare the same option itself (a command's own --json stays its own)."""
    shared = [p for p in root.params if isinstance(p, TyperOption) and p.name in RECORDERS]
    for command in walk(root):
        if command is root:
            continue
        taken = {opt for param in command.params for opt in param.opts}
        for param in shared:
            if taken.isdisjoint(param.opts):
                command.params.append(_copy_for_command(param))


def _copy_for_command(param: TyperOption) -> TyperOption:
    recorder = RECORDERS[str(param.name)]
    option = copy.copy(param)
    option.expose_value = False
    option.envvar = None  # read once, by the root
    option.hidden = True
    option.callback = lambda _ctx, _param, value: recorder(value)
    return option
