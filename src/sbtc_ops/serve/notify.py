"""Webhooks on failure and on recovery: generic JSON, or Slack- and Discord-shaped bodies
chosen by the webhook's host. Sent from a background thread, retried with exponential
backoff (honouring Retry-After), never carrying a secret: messages are scrubbed of every
configured secret, and webhook URLs (which are credentials themselves) are never logged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from sbtc_ops import __version__
from sbtc_ops.history import JobOutcome
from sbtc_ops.httpdeadline import bounded_request
from sbtc_ops.redact import scrub, scrub_data
from sbtc_ops.serve.scheduler import JobResult

log = logging.getLogger(__name__)

FAILURE = "failure"
RECOVERY = "recovery"
_FAILING = (JobOutcome.PROBLEM, JobOutcome.ERROR)  # an interrupted run (shutdown) is not news
_MAX_RETRY_AFTER_S = 60.0
_MAX_ANSWER_BYTES = 1024 * 1024  # a webhook's answer is only looked at for its status


@dataclass(frozen=True)
class Notification:
    event: str
    job: str
    outcome: str
    summary: str
    at: float
    host: str

    @property
    def text(self) -> str:
        mark = "❌" if self.event == FAILURE else "✅"
        verb = "failed" if self.event == FAILURE else "recovered"
        return f"{mark} sbtc-ops on {self.host}: {self.job} {verb} ({self.outcome}): {self.summary}"


def transition(previous: str | None, current: str) -> str | None:
    """failure when a job starts failing, recovery when it succeeds again; else nothing."""
    if current in _FAILING and previous not in _FAILING:
        return FAILURE
    if current == JobOutcome.OK and previous in _FAILING:
        return RECOVERY
    return None


def webhook_kind(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host.endswith(("discord.com", "discordapp.com")) and parts.path.startswith("/api/webhooks"):
        return "discord"
    return "json"


def body_for(kind: str, note: Notification) -> dict[str, Any]:
    if kind == "slack":
        return {"text": note.text}
    if kind == "discord":
        return {"content": note.text[:2000], "username": "sbtc-ops"}
    return {
        "source": "sbtc-ops",
        "version": __version__,
        "event": note.event,
        "job": note.job,
        "outcome": note.outcome,
        "summary": note.summary,
        "host": note.host,
        "at": datetime.fromtimestamp(note.at, UTC).isoformat(),
        "text": note.text,
    }


def describe(url: str, index: int) -> str:
    """How a webhook is named in logs: its position and host, never its path (a token)."""
    return f"webhook {index + 1} ({urlsplit(url).hostname or '?'})"


class Notifier:
    def __init__(
        self,
        webhooks: list[SecretStr],
        secrets: list[str],
        *,
        attempts: int = 5,
        backoff_s: float = 2.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.secrets = secrets
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.clock = clock
        self.host = host or socket.gethostname()
        self._threads: list[threading.Thread] = []

    def on_finish(self, job: str, result: JobResult, previous: str | None) -> None:
        """Scheduler hook: decide, then send in the background."""
        event = transition(previous, result.outcome)
        if event is None or not self.webhooks:
            return
        note = Notification(
            event, job, result.outcome, scrub(result.summary, self.secrets), self.clock(), self.host
        )
        thread = threading.Thread(target=self.send, args=(note,), name="notify", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def send(self, note: Notification) -> list[bool]:
        """Deliver to every webhook; returns which ones accepted it."""
        delivered = []
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            for index, hook in enumerate(self.webhooks):
                url = hook.get_secret_value()
                delivered.append(self._deliver(client, url, index, note))
        return delivered

    def _deliver(self, client: httpx.Client, url: str, index: int, note: Notification) -> bool:
        body = scrub_data(body_for(webhook_kind(url), note), self.secrets)
        name = describe(url, index)
        for attempt in range(self.attempts):
            wait = self.backoff_s * (2**attempt)
            try:
                response = bounded_request(
                    client,
                    "POST",
                    url,
                    deadline_s=self.timeout_s,
                    max_bytes=_MAX_ANSWER_BYTES,
                    json=body,
                )
            except httpx.HTTPError as exc:
                log.warning("%s: %s (attempt %d)", name, type(exc).__name__, attempt + 1)
            else:
                if response.status_code < 300:
                    return True
                if response.status_code != 429 and response.status_code < 500:
                    log.warning("%s refused the notification: HTTP %d", name, response.status_code)
                    return False
                log.warning("%s: HTTP %d (attempt %d)", name, response.status_code, attempt + 1)
                wait = _retry_after(response, wait)
            if attempt + 1 < self.attempts:
                self.sleep(wait)
        log.error("%s: notification not delivered after %d attempts", name, self.attempts)
        return False


def _retry_after(response: httpx.Response, default: float) -> float:
    header = response.headers.get("retry-after")
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(header))) if header else default
    except ValueError:
        return default
