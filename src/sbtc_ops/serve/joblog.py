"""`serve`'s log on stderr: one line per finished job run, and the daemon's own messages.

A daemon that says nothing when all is well cannot be told from one that is stuck: every run
ends in exactly one line (job, outcome, duration, summary), in text for people and journald,
or as JSON lines (`serve --log-format json`) for log shippers. Summaries are scrubbed of the
configuration's secrets before they are written (they come from job bodies that may quote a
driver's error).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sbtc_ops.redact import scrub
from sbtc_ops.serve.scheduler import JobAction, JobContext, JobResult


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


Write = Callable[[str], None]


def write_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class JobLog:
    """Wraps the scheduler's action (to time each run) and is its finish hook."""

    def __init__(
        self,
        log_format: LogFormat = LogFormat.TEXT,
        secrets: list[str] | None = None,
        write: Write = write_stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.format = log_format
        self.secrets = secrets or []
        self.write = write
        self.clock = clock
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def timed(self, action: JobAction) -> JobAction:
        def run(ctx: JobContext) -> JobResult:
            with self._lock:
                self._started[ctx.name] = self.clock()
            return action(ctx)

        return run

    def on_finish(self, job: str, result: JobResult, previous: str | None) -> None:
        with self._lock:
            started = self._started.pop(job, None)
        duration = None if started is None else round(self.clock() - started, 1)
        summary = scrub(" ".join(result.summary.split()), self.secrets)
        fields = {"job": job, "outcome": result.outcome, "duration_s": duration}
        if self.format == LogFormat.JSON:
            self.write(_json_line("job", {**fields, "summary": summary, "previous": previous}))
            return
        took = f" in {duration:.1f} s" if duration is not None else ""
        self.write(f"job {job}: {result.outcome}{took}: {summary}")

    def announce(self, text: str) -> None:
        """The daemon's own messages (listening, stopped, the DKG watch), in the same format."""
        text = scrub(text, self.secrets)
        self.write(_json_line("message", {"message": text}) if self.format == "json" else text)


def _json_line(event: str, fields: dict[str, Any]) -> str:
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return json.dumps({"ts": at, "event": event, **fields}, separators=(",", ":"))
