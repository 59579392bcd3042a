"""The HTTP server in-process: keep-alive, HEAD, refusals, probes, a broken state DB, and
the metrics cache that makes many scrapers cost one database read."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from sbtc_ops.errors import UsageError
from sbtc_ops.serve.http import StatusServer, parse_bind
from sbtc_ops.serve.metrics import CachedExposition
from tests.support.serve import populate


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[StatusServer, int]]:
    populate(tmp_path / "state")
    ready = {"ok": True}
    app = StatusServer(
        "127.0.0.1:0",
        tmp_path / "state",
        healthy=lambda: (True, "ok"),
        ready=lambda: (ready["ok"], "ready" if ready["ok"] else "scheduler not running"),
    )
    _, port = app.start()
    app.ready_flag = ready  # type: ignore[attr-defined]
    try:
        yield app, port
    finally:
        app.stop()


def test_keep_alive_serves_many_requests_on_one_connection(
    server: tuple[StatusServer, int],
) -> None:
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for path in ("/metrics", "/healthz", "/", "/metrics"):
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, path
        assert response.getheader("Connection") == "keep-alive"
        assert int(response.getheader("Content-Length") or -1) == len(body)
    conn.request("HEAD", "/metrics")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert int(head.getheader("Content-Length") or 0) > 1000
    conn.close()


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_refusals_close_the_connection(server: tuple[StatusServer, int]) -> None:
    _, port = server
    posted = raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert posted.startswith(b"HTTP/1.1 405 ") and b"Connection: close" in posted
    garbage = raw(port, b"\x16\x03\x01 not http\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    old = raw(port, b"GET /healthz HTTP/1.0\r\n\r\n")  # HTTP/1.0: answered, then closed
    assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b"ok\n")
    missing = raw(port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 ")


def test_readiness_follows_the_probe(server: tuple[StatusServer, int]) -> None:
    app, port = server
    app.ready_flag["ok"] = False  # type: ignore[attr-defined]
    answer = raw(port, b"GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"scheduler not running\n")


def test_a_broken_state_db_is_a_500_and_the_server_keeps_serving(
    server: tuple[StatusServer, int],
) -> None:
    app, port = server
    (app.state_dir / "state.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (app.state_dir / f"state.db{suffix}").unlink(missing_ok=True)
    page = raw(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 500 ")
    health = raw(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200 ")


def test_bind_addresses() -> None:
    assert parse_bind("127.0.0.1:9185") == ("127.0.0.1", 9185)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("9185", "localhost", "127.0.0.1:http", "1.2.3.4:70000", ":9185"):
        with pytest.raises(UsageError):
            parse_bind(bad)


def test_a_taken_port_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = StatusServer(
            f"127.0.0.1:{port}", tmp_path, healthy=lambda: (True, ""), ready=lambda: (True, "")
        )
        with pytest.raises(UsageError, match="cannot listen"):
            app.start()


class CountingCollector:
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        if self.calls > 1:
            assert self.release.wait(5)
        yield GaugeMetricFamily("sbtc_ops_test", "calls", value=self.calls)


def test_the_cache_rebuilds_in_the_background_and_never_makes_a_scraper_wait() -> None:
    registry = CollectorRegistry(auto_describe=False)
    collector = CountingCollector()
    registry.register(collector)  # type: ignore[arg-type]
    cache = CachedExposition(registry, max_age_s=0.0)
    first = cache.get()
    assert b"sbtc_ops_test 1.0" in first
    # The rebuild is blocked: every scraper meanwhile gets the previous text at once.
    answers = [cache.get() for _ in range(20)]
    assert set(answers) == {first} and collector.calls == 2
    collector.release.set()
    for _ in range(100):
        if cache.get() != first:
            break
        threading.Event().wait(0.02)
    assert cache.get() != first  # the rebuilt text replaced it
