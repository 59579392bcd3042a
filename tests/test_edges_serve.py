"""`serve`'s HTTP server under a crowd (issue 13): a capped number of connections (the idle
ones give way), idle and slow clients closed, errors logged at a bounded rate."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops.serve.http import StatusServer
from sbtc_ops.serve.ratelog import RateLimitedLog
from tests.support.serve import http_get, start_status_server

CAP = 8
CROWD = 60  # far more idle connections than the cap (bounded: loopback, one test process)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[StatusServer, int]]:
    server, port = start_status_server(tmp_path / "state", max_connections=CAP, idle_timeout_s=60.0)
    try:
        yield server, port
    finally:
        server.stop()


def _open_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def _open_connections(server: StatusServer) -> int:
    return len(server._open)


def test_a_crowd_of_idle_connections_does_not_starve_metrics(
    app: tuple[StatusServer, int],
) -> None:
    server, port = app
    crowd = _open_idle(port, CROWD)
    try:
        status, body = http_get(port, "/metrics")
        assert status == 200 and b"sbtc_ops_" in body
        assert http_get(port, "/readyz") == (200, b"ready\n")
        assert http_get(port, "/healthz") == (200, b"ok\n")
        assert _open_connections(server) <= CAP
        assert server.evicted >= CROWD - CAP
    finally:
        for sock in crowd:
            sock.close()


def test_evicted_idle_connections_are_closed_by_the_server(app: tuple[StatusServer, int]) -> None:
    _, port = app
    crowd = _open_idle(port, CAP * 3)
    try:
        assert http_get(port, "/healthz")[0] == 200
        # The oldest ones made room: the server closed them (EOF, no answer).
        assert crowd[0].recv(1) == b""
    finally:
        for sock in crowd:
            sock.close()


def test_a_keep_alive_client_keeps_working_among_the_crowd(app: tuple[StatusServer, int]) -> None:
    _, port = app
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    crowd: list[socket.socket] = []
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        crowd = _open_idle(port, CROWD)
        # Its idle connection was closed to make room; like any HTTP client (Prometheus'
        # among them) it sends the request again on a new connection, which is admitted.
        try:
            conn.request("GET", "/metrics")
            status = conn.getresponse().status
        except (http.client.RemoteDisconnected, ConnectionError):
            conn.close()
            conn.request("GET", "/metrics")
            status = conn.getresponse().status
        assert status == 200
    finally:
        conn.close()
        for sock in crowd:
            sock.close()


def test_idle_and_slow_clients_are_closed(tmp_path: Path) -> None:
    server, port = start_status_server(tmp_path / "state", idle_timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
            assert idle.recv(1) == b""  # closed by the server, not by our timeout
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # …and never the end of the head
            assert slow.recv(1) == b""
        assert _open_connections(server) == 0
    finally:
        server.stop()


def test_repeated_errors_are_logged_a_bounded_number_of_times(
    app: tuple[StatusServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    server, port = app
    (server.state_dir / "state.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (server.state_dir / f"state.db{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.ERROR, logger="sbtc_ops.serve.http"):
        for _ in range(200):
            assert http_get(port, "/")[0] == 500
    records = [r for r in caplog.records if r.name == "sbtc_ops.serve.http"]
    assert 1 <= len(records) <= server.errors.burst
    assert http_get(port, "/healthz")[0] == 200


def test_rate_limited_log_reports_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("edges.ratelog"), burst=2, window_s=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="edges.ratelog"):
        for _ in range(1000):
            limited.log(logging.WARNING, "same", "it failed")
        limited.log(logging.WARNING, "other", "another failure")
        now[0] = 11.0
        limited.log(logging.WARNING, "same", "it failed")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "it failed",
        "it failed",
        "another failure",
        "it failed (998 similar messages suppressed)",
    ]


def test_serve_settings_bound_the_cap() -> None:
    from pydantic import ValidationError

    from sbtc_ops.config import ServeSettings

    assert ServeSettings().max_connections == 64
    with pytest.raises(ValidationError):
        ServeSettings(max_connections=0)
    with contextlib.suppress(ValidationError):
        assert ServeSettings(max_connections=5).max_connections == 5
