"""The daemon's HTTP side: /metrics, /healthz, /readyz and the status page at /.

One asyncio event loop in its own thread serves every connection (HTTP/1.1 keep-alive,
GET and HEAD only): fifty scrapers cost no fifty threads fighting for the GIL. /metrics comes
from a short cache so many scrapers cost one read of the state database; the status page is
rendered in a worker thread. Nothing here can start a job.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from sbtc_ops.errors import UsageError
from sbtc_ops.serve.metrics import CachedExposition, registry_for
from sbtc_ops.serve.page import render_page
from sbtc_ops.serve.snapshot import Snapshot, read_snapshot

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
_SECURITY_HEADERS = (
    b"X-Content-Type-Options: nosniff\r\n"
    b"Cache-Control: no-store\r\n"
    b"Referrer-Policy: no-referrer\r\n"
    b"X-Frame-Options: DENY\r\n"
    b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src 'self'\r\n"
)
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_MAX_HEAD = 16 * 1024
_IDLE_TIMEOUT_S = 75.0


def parse_bind(bind: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT; port 0 picks a free one."""
    host, sep, port_text = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"bind address {bind!r} is not HOST:PORT (e.g. 127.0.0.1:9185)")
    return host, int(port_text)


class StatusServer:
    def __init__(
        self,
        bind: str,
        state_dir: Path,
        *,
        healthy: Probe,
        ready: Probe,
        extra_metrics: Callable[[Snapshot], Iterator[Metric]] | None = None,
        schedule: Callable[[], dict[str, float | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = parse_bind(bind)
        self.state_dir = state_dir
        self.healthy = healthy
        self.ready = ready
        self.clock = clock
        self.schedule = schedule
        self.metrics = CachedExposition(registry_for(state_dir, clock, extra_metrics))
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._pages = ThreadPoolExecutor(max_workers=2, thread_name_prefix="page")

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(
                    self._connection, host, port, family=family, backlog=256, limit=_MAX_HEAD
                )
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="choose another address with --bind or serve.bind",
            ) from None
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)
        self._thread.start()
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
        self._pages.shutdown(wait=False, cancel_futures=True)
        self._server = None

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def page(self) -> bytes:
        next_runs = self.schedule() if self.schedule is not None else None
        return render_page(read_snapshot(self.state_dir, self.clock()), next_runs).encode()

    # -- one connection ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_TIMEOUT_S)
                keep_alive = await self._answer(head, writer)
                await writer.drain()
                if not keep_alive:
                    break
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        except asyncio.CancelledError:
            raise
        finally:
            writer.close()

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._write(writer, HTTPStatus.BAD_REQUEST, _TEXT, b"bad request\n", False, False)
            return False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        connection = headers.get("connection", "")
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        if method not in ("GET", "HEAD") or headers.get("content-length", "0") != "0":
            self._write(writer, HTTPStatus.METHOD_NOT_ALLOWED, _TEXT, b"GET or HEAD only\n", False, False)  # fmt: skip
            return False
        status, content_type, body = await self._route(target.split("?", 1)[0])
        self._write(writer, status, content_type, body, method == "HEAD", keep_alive)
        return keep_alive

    async def _route(self, path: str) -> tuple[HTTPStatus, str, bytes]:
        try:
            if path == "/metrics":
                # Rebuilt at most once a second, in this thread: a few milliseconds.
                return HTTPStatus.OK, CONTENT_TYPE_LATEST, self.metrics.get()
            if path in ("/healthz", "/readyz"):
                ok, detail = (self.healthy if path == "/healthz" else self.ready)()
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                return status, _TEXT, f"{detail}\n".encode()
            if path in ("/", "/index.html"):
                body = await asyncio.get_running_loop().run_in_executor(self._pages, self.page)
                return HTTPStatus.OK, _HTML, body
            return HTTPStatus.NOT_FOUND, _TEXT, b"not found\n"
        except Exception:  # a broken state DB answers 500; the daemon keeps serving
            log.exception("error answering %s", path)
            return HTTPStatus.INTERNAL_SERVER_ERROR, _TEXT, b"internal error\n"

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        head_only: bool,
        keep_alive: bool,
    ) -> None:
        header = (
            (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                f"Server: sbtc-ops\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
            ).encode()
            + _SECURITY_HEADERS
            + b"\r\n"
        )
        writer.write(header if head_only else header + body)
