"""Issue 21, item 5: `serve`'s HTTP side under clients that do not read their answers.

64 clients pipelining `GET /metrics` without ever reading held every connection slot and
blocked `/healthz` and `/metrics` for as long as they stayed (`writer.drain()` had no
deadline). Now: a write deadline, a cap on requests pipelined past unread answers, and
stuck connections give way to new ones. Bounds are the tests' timeouts, never timed asserts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from sbtc_ops.serve.http import DEFAULT_MAX_CONNECTIONS, StatusServer
from sbtc_ops.serve.snapshot import Snapshot
from tests.support.serve import http_get, start_status_server

pytestmark = pytest.mark.timeout(90)

MISBEHAVING = 64
PIPELINED = 2000  # requests each client sends at once (about 80 kB), never reading
# What a client sends before being closed for pipelining (socket buffers included).
MAX_PIPELINED_BYTES = 64 << 20


def big_metrics(_snapshot: Snapshot) -> Iterator[Metric]:
    """About 4 MB of exposition: one answer is more than the socket buffers hold."""
    family = GaugeMetricFamily("sbtc_ops_test_padding", "padding", labels=["n"])
    for n in range(60_000):
        family.add_metric([f"{n:064d}"], 1.0)
    yield family


def pipeline_without_reading(port: int, count: int) -> socket.socket:
    """A client that sends `count` GET /metrics at once (as much as the kernel takes) and
    never reads an answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, ConnectionError):
        sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * count)
    return sock


def wait_until_closed(server: StatusServer) -> None:
    """Poll (bounded by the test's timeout) until the server has accepted the clients'
    connections and then holds none: checked before the accept, "none open" proves nothing."""
    deadline = time.monotonic() + 10
    while not server._open and time.monotonic() < deadline:
        time.sleep(0.01)
    while server._open:
        time.sleep(0.05)


def closed_by_server(sock: socket.socket) -> bool:
    """Read what the server sent until it closed (EOF or reset); False if it never does
    within the socket's timeout."""
    sock.setblocking(True)
    sock.settimeout(30)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def crowd() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_healthz_answers_while_64_clients_pipeline_metrics_and_never_read(
    tmp_path: Path, crowd: list[socket.socket]
) -> None:
    server, port = start_status_server(
        tmp_path / "state", idle_timeout_s=600.0
    )  # no help from the idle timeout
    try:
        assert DEFAULT_MAX_CONNECTIONS == MISBEHAVING
        crowd.extend(pipeline_without_reading(port, PIPELINED) for _ in range(MISBEHAVING))
        assert http_get(port, "/healthz") == (200, b"ok\n")
        status, body = http_get(port, "/metrics")
        assert status == 200 and b"sbtc_ops_" in body
        # Each was closed: by the cap on pipelined requests, or to make room.
        wait_until_closed(server)
        assert all(closed_by_server(sock) for sock in crowd)
    finally:
        server.stop()


def test_a_client_that_does_not_take_its_answer_is_closed_at_the_write_deadline(
    tmp_path: Path, crowd: list[socket.socket]
) -> None:
    server, port = start_status_server(
        tmp_path / "state", write_timeout_s=1.0, extra_metrics=big_metrics
    )
    try:
        crowd.append(pipeline_without_reading(port, 1))  # one request: no pipelining
        wait_until_closed(server)
        assert closed_by_server(crowd[0])
        assert http_get(port, "/healthz") == (200, b"ok\n")
    finally:
        server.stop()


def test_a_well_behaved_pipelining_client_gets_every_answer(tmp_path: Path) -> None:
    server, port = start_status_server(tmp_path / "state")
    count = 50
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * count)
            received = b""
            while received.count(b"ok\n") < count:
                chunk = sock.recv(65536)
                assert chunk, f"closed after {received.count(b'HTTP/1.1 200')} answers"
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == count
    finally:
        server.stop()


def test_pipelining_past_unread_answers_is_capped(
    tmp_path: Path, crowd: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    # Small answers: the socket buffers fill long before the write deadline could apply.
    server, port = start_status_server(
        tmp_path / "state", idle_timeout_s=600.0, write_timeout_s=600.0
    )
    try:
        with caplog.at_level(logging.WARNING, logger="sbtc_ops.serve.http"):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            crowd.append(sock)
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            sent = 0
            sock.setblocking(False)
            while server._open or sent == 0:  # until the server gives up on it
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(request * 64)
                time.sleep(0.01)
        assert closed_by_server(sock)
        assert any("without reading the answers" in r.getMessage() for r in caplog.records)
        assert sent < MAX_PIPELINED_BYTES
    finally:
        server.stop()
