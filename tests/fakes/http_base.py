"""Shared plumbing of the audit's fake services: a real HTTP/1.1 server in a thread.

Each fake (Bitcoin Core, GitHub, OSV, a Prometheus endpoint, the signer's /info) subclasses
:class:`LocalServer` and implements :meth:`LocalServer.route`; this module gives them the
lifecycle (``with Fake() as fake:`` binds 127.0.0.1 on a random port and joins every thread
on exit), request recording, and failure injection::

    fake.fail(http_error(500, "boom"), times=1, on="/v1/querybatch")
    fake.fail(slow(3))                       # answers after 3 s (or when stopped)
    fake.fail(raw(b"{not json", "application/json"))
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(document).encode(), "application/json", headers or {})


def text_response(status: int, text: str, content_type: str = "text/plain") -> Response:
    return Response(status, text.encode(), content_type)


@dataclass(frozen=True)
class Failure:
    response: Response | None = None  # None: answer normally (after `seconds`)
    seconds: float = 0.0


def http_error(
    status: int, body: str = "", headers: dict[str, str] | None = None, content_type: str = ""
) -> Failure:
    kind = content_type or ("application/json" if body.startswith("{") else "text/plain")
    return Failure(Response(status, body.encode(), kind, headers or {}))


def raw(body: bytes, content_type: str = "application/json", status: int = 200) -> Failure:
    return Failure(Response(status, body, content_type))


def not_json() -> Failure:
    return raw(b"<html><body>502 Bad Gateway</body></html>", "text/html")


def slow(seconds: float) -> Failure:
    return Failure(None, seconds)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _Armed:
    failure: Failure
    remaining: int | None
    on: str | None


class ThreadedHttpServer:
    """The lifecycle of a fake: a ThreadingHTTPServer on 127.0.0.1 (random port) served from a
    thread, whose handler threads are joined on stop. Subclasses give the handler class."""

    def __init__(self) -> None:
        self._stopping = threading.Event()  # wakes handlers that wait (slow answers)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads are joined on close (slow answers wake up when stopping).
        server.daemon_threads = False
        server.block_on_close = True
        self._stopping.clear()
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; still known after stop(), to test a source that went offline."""
        assert self._port is not None, "the fake was never started"
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class LocalServer(ThreadedHttpServer):
    """Subclass and implement route(); use as a context manager."""

    server_header = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._failures: list[_Armed] = []

    def route(self, request: Request) -> Response:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"fake": self, "server_version": self.server_header})

    # failures

    def fail(self, failure: Failure, times: int | None = None, on: str | None = None) -> None:
        """Misbehave for the next `times` requests whose path starts with `on`."""
        with self.lock:
            self._failures.append(_Armed(failure, times, on))

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def _next_failure(self, path: str) -> Failure | None:
        with self.lock:
            for armed in self._failures:
                if armed.on is not None and not path.startswith(armed.on):
                    continue
                if armed.remaining is not None:
                    if armed.remaining <= 0:
                        continue
                    armed.remaining -= 1
                return armed.failure
        return None


class _Handler(BaseHTTPRequestHandler):
    fake: LocalServer
    sys_version = ""
    timeout = 10
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            time.monotonic(),
        )
        with self.fake.lock:
            self.fake.requests.append(request)
        failure = self.fake._next_failure(parts.path)
        if failure is not None:
            if failure.seconds and self.fake._stopping.wait(failure.seconds):
                return  # stopped while slow: drop the connection
            if failure.response is not None:
                self._send(failure.response)
                return
        self._send(self.fake.route(request))

    do_GET = _handle
    do_POST = _handle
