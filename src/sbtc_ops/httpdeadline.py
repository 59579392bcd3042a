"""HTTP requests with a whole-request wall-clock deadline and a bounded answer.

httpx's timeouts bound each socket operation, not the request: a server that trickles its
status line and headers one byte a second never trips a 3 s read timeout and holds the
caller (and `verify`, and a `serve` worker) for as long as it likes. Every HTTP call of
sbtc-ops goes through `bounded_request`:

* a watchdog timer shuts the request's socket down when the deadline passes, whatever
  phase the request is in (headers, body, a TLS read), so the blocked read returns at once;
  the socket comes from httpcore's documented `trace` extension as soon as it is connected;
* every request asks for `Connection: close`, so each one has its own fresh connection (a
  reused pooled connection would be invisible to the watchdog);
* the body is read raw (no compression asked for) and at most `max_bytes` of it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx


class DeadlineExceeded(httpx.TimeoutException):
    """The complete answer did not arrive within the request's deadline."""


class AnswerTooLarge(httpx.RequestError):
    """The answer's body is larger than the caller accepts."""


class _Watchdog:
    """Shuts down the request's socket when `deadline_s` has passed."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(deadline_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: remember each socket this request connects."""
        if not event.endswith(("connect_tcp.complete", "connect_unix_socket.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            late = self.expired
        if late:  # the deadline passed while connecting
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # shutdown, not close: the reading thread still owns the descriptor; its blocked recv
    # returns end-of-file at once and httpx raises, then closes the socket itself.
    with contextlib.suppress(OSError):  # already closed or never connected
        sock.shutdown(socket.SHUT_RDWR)


def bounded_request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    deadline_s: float,
    max_bytes: int,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """`client.request(...)`, complete (status, headers, whole body) within `deadline_s`.

    Raises DeadlineExceeded when the deadline passes, AnswerTooLarge past `max_bytes` of
    body, and httpx's own errors for everything else; the returned response is fully read.
    """
    started = time.monotonic()
    request_headers = {"connection": "close", "accept-encoding": "identity", **(headers or {})}
    watchdog = _Watchdog(deadline_s)
    try:
        with (
            watchdog,
            client.stream(
                method,
                url,
                headers=request_headers,
                extensions={"trace": watchdog.trace},
                timeout=_capped(client.timeout, deadline_s),
                **kwargs,
            ) as streamed,
        ):
            body = _read_body(streamed, max_bytes, watchdog)
    except httpx.HTTPError:
        if watchdog.expired or time.monotonic() - started >= deadline_s:
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s") from None
        raise
    return httpx.Response(
        streamed.status_code,
        headers=streamed.headers,
        content=body,
        request=streamed.request,
        extensions={"http_version": streamed.http_version.encode()},
    )


def _capped(timeout: httpx.Timeout, deadline_s: float) -> httpx.Timeout:
    """The client's per-operation timeouts, none longer than the whole deadline (so a
    connection still being made when the deadline passes gives up by then too)."""

    def cap(value: float | None) -> float:
        return deadline_s if value is None else min(value, deadline_s)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


def _read_body(streamed: httpx.Response, max_bytes: int, watchdog: _Watchdog) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in streamed.iter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(f"answer larger than {max_bytes} bytes")
        chunks.append(chunk)
    if watchdog.expired:  # the socket was shut mid-body: what we have is cut short
        raise DeadlineExceeded(f"no complete answer within {watchdog.deadline_s:g} s")
    return b"".join(chunks)
