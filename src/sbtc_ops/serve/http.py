"""The daemon's HTTP side: /metrics, /healthz, /readyz and the status page at /.

A threading stdlib server; every response is built from the state database (metrics through
a short cache so many scrapers cost one read). Nothing here can start a job.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from sbtc_ops.errors import UsageError
from sbtc_ops.serve.metrics import CachedExposition, registry_for
from sbtc_ops.serve.page import render_page
from sbtc_ops.serve.snapshot import Snapshot, read_snapshot

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
}


def parse_bind(bind: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT; port 0 picks a free one."""
    host, sep, port_text = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"bind address {bind!r} is not HOST:PORT (e.g. 127.0.0.1:9185)")
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: StatusServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, _Handler)


class StatusServer:
    def __init__(
        self,
        bind: str,
        state_dir: Path,
        *,
        healthy: Probe,
        ready: Probe,
        extra_metrics: Callable[[Snapshot], Iterator[Metric]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = parse_bind(bind)
        self.state_dir = state_dir
        self.healthy = healthy
        self.ready = ready
        self.clock = clock
        self.metrics = CachedExposition(registry_for(state_dir, clock, extra_metrics))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        try:
            self._server = _Server(self.address, self)
        except OSError as exc:
            host, port = self.address
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="choose another address with --bind or serve.bind",
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http"
        )
        self._thread.daemon = True
        self._thread.start()
        address = self._server.server_address
        return str(address[0]), int(address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def page(self) -> bytes:
        return render_page(read_snapshot(self.state_dir, self.clock())).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: scrapers reuse connections
    server: _Server
    server_version = "sbtc-ops"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, app.metrics.get(), head)
            elif path == "/healthz":
                self._probe(app.healthy, head)
            elif path == "/readyz":
                self._probe(app.ready, head)
            elif path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", app.page(), head)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", head)
        except Exception:  # a broken state DB answers 500; the daemon keeps serving
            log.exception("error answering %s", path)
            self._send(500, "text/plain; charset=utf-8", b"internal error\n", head)

    def _probe(self, probe: Probe, head: bool) -> None:
        ok, detail = probe()
        self._send(200 if ok else 503, "text/plain; charset=utf-8", f"{detail}\n".encode(), head)

    def _send(self, status: int, content_type: str, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _reject(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", head=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _reject
