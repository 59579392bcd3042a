"""Standard streams: a reader may close them, and data never controls the terminal.

`sbtc-ops backup | head -1` is not a failure:

Python ignores SIGPIPE, so writing to a pipe whose reader has gone raises BrokenPipeError
wherever the command happens to print, and typer turns that into exit 1 ("problem found").
The command's work (a backup taken, a verification done) is what the exit code reports, so
the lost reader only stops the output: the stream is pointed at /dev/null and the command
runs to its own end and exit status.

Whatever reaches stdout or stderr without SafeConsole (print, click, logging, a traceback) has
its control characters escaped (sbtc_ops.termsafe.install_output_escaping, installed by
main() beside these guards), so no path can forget it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO, cast


class _ReaderGoneSafe:
    """A text stream whose writes and flushes survive a closed pipe (output then dropped)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def _drop_output(self) -> None:
        # Redirect the descriptor itself: buffered bytes and the interpreter's final flush
        # go to /dev/null instead of raising (or printing "Exception ignored") at exit.
        self.reader_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_output()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_output()
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_closed_pipes() -> None:
    """Make stdout and stderr survive a reader that closes its end early."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, _ReaderGoneSafe):
            continue
        try:
            stream.fileno()
        except (OSError, ValueError, AttributeError):
            continue  # not a real descriptor (a test harness capture): leave it alone
        setattr(sys, name, cast(TextIO, _ReaderGoneSafe(stream)))
