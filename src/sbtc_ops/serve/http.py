"""The daemon's HTTP side: /metrics, /healthz, /readyz and the status page at /.

One asyncio event loop in its own thread serves every connection (HTTP/1.1 keep-alive,
GET and HEAD only): fifty scrapers cost no fifty threads fighting for the GIL. At most
`max_connections` are open at once: when one more arrives, the connection idle the longest
(waiting for a request) is closed to make room — or, when none is idle, the one stuck longest
writing an answer its client does not read — so a crowd of idle, slow or non-reading clients
cannot starve Prometheus of /metrics, the host of /healthz, nor the host of file descriptors.
A connection idle for `idle_timeout_s`, or sending its request head for that long, is
closed; one not taking an answer for `write_timeout_s` (the write deadline) is reset, its
unsent data dropped; one
that keeps pipelining requests without reading the answers is closed after MAX_PIPELINED of
them (issue 21). Errors are logged at a bounded rate (ratelog). /metrics comes
from a short cache so many scrapers cost one read of the state database; the status page is
rendered in a worker thread. Nothing here can start a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
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
from sbtc_ops.serve.ratelog import RateLimitedLog
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
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_TIMEOUT_S = 30.0
# An answer the client has not taken within this long (once the socket buffers are full) is
# dropped with its connection: a scraper reads a /metrics answer in milliseconds.
DEFAULT_WRITE_TIMEOUT_S = 10.0
# Requests in a row that arrive while an earlier answer is still unsent (the client is not
# reading): past this, the connection is closed. A well-behaved pipelining client never
# gets near it (its answers leave as fast as it reads them).
MAX_PIPELINED = 16


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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
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
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        # Open connections, each with the time it became idle (None while answering), and
        # those waiting for their client to take an answer, since when.
        self._open: dict[asyncio.StreamWriter, float | None] = {}
        self._writing: dict[asyncio.StreamWriter, float] = {}
        self.evicted = 0  # connections closed to make room (for tests and logs)
        self.errors = RateLimitedLog(log)
        self._loop.set_exception_handler(self._loop_error)

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
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        # Let every connection unwind (its sockets aborted) before the loop stops: a task
        # left pending is destroyed with the loop, and logged as an error.
        await asyncio.gather(*tasks, return_exceptions=True)

    def page(self) -> bytes:
        next_runs = self.schedule() if self.schedule is not None else None
        return render_page(read_snapshot(self.state_dir, self.clock()), next_runs).encode()

    # -- one connection ---------------------------------------------------------------------

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """asyncio's own errors (accept() out of descriptors, a transport failing): logged
        at a bounded rate, not once per failed accept."""
        exc = context.get("exception")
        key = f"loop:{type(exc).__name__}:{context.get('message')}"
        self.errors.log(
            logging.ERROR, key, "http: %s", context.get("message"),
            exc_info=exc if isinstance(exc, BaseException) else None,
        )  # fmt: skip

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Room for one more connection: close the one idle longest if the cap is reached,
        else the one stuck longest writing to a client that does not read; False (refuse
        this one) when every open connection is busy answering."""
        if len(self._open) >= self.max_connections:
            idle = [(since, w) for w, since in self._open.items() if since is not None]
            victims = idle or [(since, w) for w, since in self._writing.items()]
            if not victims:
                return False
            _, oldest = min(victims, key=lambda item: item[0])
            self._drop(oldest)
            self.evicted += 1
            self.errors.log(
                logging.WARNING, "evict",
                "http: %d connections open (serve.max_connections); closing the longest "
                "idle or stuck one", self.max_connections,
            )  # fmt: skip
        self._open[writer] = time.monotonic()
        return True

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        """Close at once. A connection whose client does not take its answers is reset
        (SO_LINGER 0): its unsent data is dropped by the kernel too, rather than kept for a
        client that may never read (close() would wait for it, keeping the socket)."""
        stuck = writer in self._writing or writer.transport.get_write_buffer_size() > 0
        self._open.pop(writer, None)
        self._writing.pop(writer, None)
        sock = writer.get_extra_info("socket")
        if stuck and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve_requests(reader, writer)
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
            self._drop(writer)

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer requests until the client closes, asks to close, times out, or pipelines
        more than MAX_PIPELINED requests without reading (each raises or returns)."""
        pipelined = 0
        while not writer.is_closing():
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout_s)
            if writer not in self._open:
                return  # evicted while its request arrived
            pipelined = pipelined + 1 if writer.transport.get_write_buffer_size() else 0
            if pipelined > MAX_PIPELINED:
                self.errors.log(
                    logging.WARNING, "pipelined",
                    "http: a client sent %d requests without reading the answers; closing it",
                    pipelined,
                )  # fmt: skip
                return
            self._open[writer] = None
            keep_alive = await self._answer(head, writer)
            self._writing[writer] = time.monotonic()
            await asyncio.wait_for(writer.drain(), self.write_timeout_s)
            self._writing.pop(writer, None)
            if not keep_alive:  # the rest of the answer goes out first, within the deadline
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), self.write_timeout_s)
                return
            self._open[writer] = time.monotonic()

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
        except Exception as exc:  # noqa: BLE001 - a broken state DB answers 500; serving goes on
            self.errors.log(
                logging.ERROR, f"route:{path}:{type(exc).__name__}", "error answering %s", path,
                exc_info=exc,
            )  # fmt: skip
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
