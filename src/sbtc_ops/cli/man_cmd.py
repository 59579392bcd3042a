"""`sbtc-ops man`: the sbtc-ops(1) manual page, generated from the CLI itself (every command,
its help and its options), so the page the systemd units point at (`Documentation=man:
sbtc-ops(1)`) never drifts from the program. Install it with
`sbtc-ops man > /usr/local/share/man/man1/sbtc-ops.1`.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common

_EXIT_STATUS = (
    ("0", "all good"),
    ("1", "a problem was found (a failed check, a mismatch, a finding at or above --fail-on)"),
    ("2", "could not do the job (bad usage, bad configuration, a dependency unreachable)"),
    ("130", "interrupted (SIGINT or SIGTERM); everything started was cleaned up"),
)


def man(ctx: typer.Context, json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """Print the sbtc-ops(1) manual page (roff), generated from the commands' own help
    (--json: the page in the one document's `page`)."""
    json_output = _common.set_json_mode(json_output)
    root = ctx.find_root()
    page = manual_page(root.command, root)
    if json_output:
        _common.emit_json({"ok": True, "format": "roff", "page": page})
        return
    _common.out.file.write(page)


def manual_page(command: Any, ctx: Any) -> str:
    from sbtc_ops import __version__

    lines = [
        f'.TH SBTC-OPS 1 "{datetime.now(UTC):%Y-%m-%d}" "sbtc-ops {_roff(__version__)}" '
        '"sbtc-ops manual"',
        ".SH NAME",
        r"sbtc-ops \- " + _roff(_first_line(command.help)),
        ".SH SYNOPSIS",
        r".B sbtc-ops",
        r"[\fIOPTIONS\fR] \fICOMMAND\fR [\fIARGS\fR]...",
        ".SH DESCRIPTION",
        _roff(_text(command.help)),
        "Every command takes \\fB\\-h\\fR for its help and \\fB\\-\\-json\\fR for one JSON "
        "document on standard output, with an \\fBok\\fR member (logs and progress go to "
        "standard error). The global options \\fB\\-c\\fR, \\fB\\-v\\fR, "
        "\\fB\\-\\-metrics\\-textfile\\fR and \\fB\\-\\-json\\fR are accepted before or after "
        "the command name.",
        ".SH OPTIONS",
        *_options(command, ctx),
        ".SH COMMANDS",
    ]
    for path, sub, sub_ctx in _commands(command, ctx, ()):
        lines += [".SS " + _roff(" ".join(("sbtc-ops", *path))), _roff(_text(sub.help))]
        lines += _options(sub, sub_ctx)
    lines.append(".SH EXIT STATUS")
    for code, meaning in _EXIT_STATUS:
        lines += [".TP", f".B {code}", _roff(meaning)]
    lines += [
        ".SH FILES",
        ".TP",
        ".B ./sbtc-ops.toml, /etc/sbtc-ops/sbtc-ops.toml",
        "configuration (see \\fBsbtc-ops config sample\\fR)",
        ".TP",
        ".B $STATE_DIRECTORY, /var/lib/sbtc-ops",
        "state: run history, locks, recorded verifications",
        ".SH SEE ALSO",
        "The README and docs/ of sbtc-ops; \\fBsbtc-ops --show-completion bash\\fR prints the "
        "shell completion script.",
    ]
    return "\n".join(lines) + "\n"


def _commands(command: Any, ctx: Any, path: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    lister = getattr(command, "list_commands", None)
    if lister is None:
        return
    for name in lister(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
        yield (*path, name), sub, sub_ctx
        yield from _commands(sub, sub_ctx, (*path, name))


def _options(command: Any, ctx: Any) -> list[str]:
    lines = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False):
            continue
        names, help_text = record
        lines += [".TP", ".B " + _roff(names), _roff(_text(help_text))]
    return lines


def _first_line(text: str | None) -> str:
    return _text(text).split(". ")[0].rstrip(".")


def _text(text: str | None) -> str:
    return " ".join((text or "").split())


def _roff(text: str) -> str:
    """Plain text safe in roff: backslashes and hyphens escaped, non-ASCII as \\[uXXXX], no
    line starting with a dot or a quote (they would be read as requests)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def register(app: typer.Typer) -> None:
    app.command("man")(man)
