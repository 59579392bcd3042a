"""The one terminal style for check lists (verify, key check, audit) and for sizes.

A check line is `  ✓ pass  ID  what was found`, ids aligned within the list, the text wrapped
to the terminal with a hanging indent, and `fix: …` under it for a check that did not pass.
Piped, nothing is wrapped (a log or grep gets whole lines).
A note that several checks repeat (e.g. "`sshd -T` failed: …" on every SSH check) is said once,
after the list, naming the checks it applies to.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TextIO

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from sbtc_ops.results import Status
from sbtc_ops.termsafe import Rendered, escape_controls

# Width used when output is not a terminal and COLUMNS is not set: no wrapping at all.
UNWRAPPED = 1_000_000
# A repeated part of a detail is lifted into a shared note only when it is at least this long
# and repeated on at least this many lines: short parts ("/etc/ssh/sshd_config") say where
# each finding comes from and stay on the line.
CAVEAT_MIN_CHARS = 24
CAVEAT_MIN_LINES = 2
STATUS_WIDTH = max(len(s.value) for s in Status)
FIX_LABEL = "fix: "

_TRAILING_GROUP = re.compile(r"\s*([(\[])([^()\[\]]*)([)\]])\s*$")


@dataclass(frozen=True)
class CheckLine:
    """One check as the terminal shows it."""

    status: Status
    id: str
    text: str
    fix: str | None = None
    suffix: str = ""  # e.g. a duration, kept after the text


@dataclass(frozen=True)
class Caveat:
    text: str
    ids: tuple[str, ...]


def console_width(stream: TextIO) -> int | None:
    """None on a terminal (rich measures it, or takes COLUMNS); piped, unwrapped: a log or a
    grep gets whole lines, and COLUMNS (often exported by shells) does not cut them."""
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        pass
    return UNWRAPPED


class SafeConsole(Console):
    """The one console class of sbtc-ops: what it prints is data, never terminal control.

    Every segment's text is escaped (termsafe.escape_controls) before Rich adds its own
    styling, whatever the call site printed (a str, a Text, a table cell, markup); Rich's own
    control segments (cursor movement of a live display) are kept. The output is marked
    `Rendered` so the escaping stream (cli._streams) lets the styling through."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        safe = (
            segment
            if segment.control
            else Segment(escape_controls(segment.text), segment.style, segment.control)
            for segment in buffer
        )
        return Rendered(super()._render_buffer(safe))


def make_console(*, stderr: bool = False) -> Console:
    """A console for human output: wrapped to the terminal, never cut at 80 when piped."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=True, width=console_width(stream))


def format_size(size: float | int | None) -> str:
    """Bytes in IEC units, the one convention everywhere: 512 B, 87.0 KiB, 1.2 GiB."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def status_summary(statuses: Iterable[Status]) -> str:
    """`11 checks: 5 pass, 2 warn, 1 fail, 3 skip`."""
    counts = Counter(statuses)
    total = sum(counts.values())
    parts = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s])
    return f"{total} checks: {parts}" if parts else f"{total} checks"


def render_checks(
    console: Console,
    groups: Sequence[tuple[str | None, Sequence[CheckLine]]],
) -> None:
    """Print check lines, optionally under group headings, then the shared notes once."""
    all_lines = [line for _, lines in groups for line in lines]
    caveats = shared_caveats(all_lines)
    id_width = max((len(line.id) for line in all_lines), default=0)
    for heading, lines in groups:
        if heading is not None:
            console.print()
            console.print(Text(heading, style="bold"))
        for line in lines:
            _print_line(console, without_caveats(line, caveats), id_width)
    for caveat in caveats:
        _print_note(console, caveat)


def shared_caveats(lines: Sequence[CheckLine]) -> list[Caveat]:
    """Parts of the lines' trailing "(…; …)" notes that several lines repeat."""
    seen: dict[str, list[str]] = {}
    for line in lines:
        for part in _trailing_parts(line.text):
            if len(part) >= CAVEAT_MIN_CHARS and line.id not in seen.setdefault(part, []):
                seen[part].append(line.id)
    return [Caveat(text, tuple(ids)) for text, ids in seen.items() if len(ids) >= CAVEAT_MIN_LINES]


def without_caveats(line: CheckLine, caveats: Sequence[Caveat]) -> CheckLine:
    match = _TRAILING_GROUP.search(line.text)
    if match is None or not caveats:
        return line
    lifted = {c.text for c in caveats}
    kept = [p for p in _split_parts(match.group(2)) if p not in lifted]
    if len(kept) == len(_split_parts(match.group(2))):
        return line
    head = line.text[: match.start()]
    mark = "*"
    text = f"{head} {match.group(1)}{'; '.join(kept)}{match.group(3)}" if kept else head
    return replace(line, text=f"{text} {mark}")


def _trailing_parts(text: str) -> list[str]:
    match = _TRAILING_GROUP.search(text)
    return _split_parts(match.group(2)) if match else []


def _split_parts(group: str) -> list[str]:
    return [part.strip() for part in group.split("; ") if part.strip()]


def _print_line(console: Console, line: CheckLine, id_width: int) -> None:
    lead = f"  {line.status.symbol} {line.status.value:<{STATUS_WIDTH}}  {line.id:<{id_width}}  "
    body = line.text + (f" {line.suffix}" if line.suffix else "")
    first, *rest = _wrap(body, console.width - len(lead))
    out = Text(lead[: 4 + STATUS_WIDTH], style=line.status.style)
    out.append(lead[4 + STATUS_WIDTH :])
    out.append(first)
    console.print(out)
    indent = " " * len(lead)
    for more in rest:
        console.print(Text(indent + more))
    if line.fix and line.status not in (Status.PASS, Status.SKIP):
        fix_first, *fix_rest = _wrap(line.fix, console.width - len(lead) - len(FIX_LABEL))
        fix = Text(indent)
        fix.append(FIX_LABEL, style="dim")
        fix.append(fix_first)
        console.print(fix)
        for more in fix_rest:
            console.print(Text(indent + " " * len(FIX_LABEL) + more))


def _print_note(console: Console, caveat: Caveat) -> None:
    out = Text("\n* ", style="dim")
    out.append(f"{caveat.text} (applies to {', '.join(caveat.ids)})")
    console.print(out)


def _wrap(text: str, width: int) -> list[str]:
    if width >= UNWRAPPED // 2:
        return text.splitlines() or [""]
    lines = textwrap.wrap(text, width=max(width, 30), break_on_hyphens=False)
    return lines or [""]
