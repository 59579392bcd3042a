"""Data shown on a terminal never controls the terminal.

Object names, server messages, backup ids, manifest fields, history entries and audit findings
are hostile input: an escape sequence in any of them could clear the screen, move the cursor
or paint a fake green "verdict: match". Every character that is not text (C0 and C1 controls
but newline and tab, DEL, and the bidirectional overrides that reorder what is read) is shown
as a visible escape (`\\x1b`, `\\u202e`) instead.

Two layers use it, so it is done once and not per call site (docs/threat-model.md):
- render.SafeConsole, the one Rich console class of sbtc-ops: the text of every segment is
  escaped before Rich adds its own styling, and the result is marked `Rendered`;
- install_output_escaping (the CLI and serve's job processes) makes stdout/stderr escaping: `Rendered` output passes as is, anything
  else (print, click, logging, a traceback) is escaped, Select Graphic Rendition sequences
  (colours, written by typer's own help console) excepted.

This module sits at the bottom of the layering: it imports nothing from sbtc_ops.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO, cast

# C0 but \t and \n, DEL, C1, and the Unicode bidi controls (Trojan Source, CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEP_NEWLINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# A colour/attribute change and nothing else: ESC [ digits/;/: m.
_SGR = re.compile(r"\x1b\[[0-9;:]{0,64}m")


class Rendered(str):
    """Terminal output whose data was escaped by SafeConsole; its own control sequences (the
    console's styling and cursor movement) pass the escaping stream as they are."""

    __slots__ = ()


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = True) -> str:
    """`text` with every control character made visible; newlines (and tabs) kept unless
    `keep_newlines` is False (a value that must stay on one line)."""
    pattern = _CONTROL_KEEP_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_visible, text)


def escape_except_colours(text: str) -> str:
    """Output of code that does not go through SafeConsole: escaped, but for SGR sequences."""
    if "\x1b" not in text:
        return escape_controls(text)
    parts = []
    position = 0
    for match in _SGR.finditer(text):
        parts.append(escape_controls(text[position : match.start()]))
        parts.append(match.group(0))
        position = match.end()
    parts.append(escape_controls(text[position:]))
    return "".join(parts)


def has_controls(text: str) -> bool:
    return _CONTROL_KEEP_NEWLINE.search(text) is not None


class EscapingStream:
    """A text stream that never lets data control the terminal: output rendered by
    SafeConsole passes as is; anything else is escaped, colours excepted."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        shown = text if isinstance(text, Rendered) else escape_except_colours(text)
        self._stream.write(shown)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_output_escaping() -> None:
    """stdout and stderr of this process through EscapingStream (once; installed outermost,
    after the secret scrubbing)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, EscapingStream):
            setattr(sys, name, cast(TextIO, EscapingStream(stream)))
