"""Logging that cannot flood: the same kind of error repeated thousands of times a second
(a client hammering a broken endpoint, accept() failing for want of descriptors) is logged a
few times per window, then summarised as "N more suppressed"."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    """At most `burst` records per `key` every `window_s` seconds; the rest are counted and
    reported with the next record that gets through."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, sent, dropped)

    def allow(self, key: str) -> tuple[bool, int]:
        """(log this one?, how many of this key were suppressed before it)."""
        now = self.clock()
        with self._lock:
            start, sent, dropped = self._windows.get(key, (now, 0, 0))
            if now - start >= self.window_s:
                start, sent = now, 0
            if sent < self.burst:
                self._windows[key] = (start, sent + 1, 0)
                return True, dropped
            self._windows[key] = (start, sent, dropped + 1)
            return False, 0

    def log(self, level: int, key: str, message: str, *args: Any, exc_info: Any = None) -> None:
        allowed, suppressed = self.allow(key)
        if not allowed:
            return
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        self.logger.log(level, message, *args, exc_info=exc_info)
