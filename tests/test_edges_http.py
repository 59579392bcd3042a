"""Whole-request deadlines (issue 13): a server trickling its answer one byte at a time never
trips a per-read timeout; every HTTP call of sbtc-ops still gives up at its deadline.

No timing assertion: the trickling server counts the bytes it could send before the client
hung up, and the answer is far longer than any deadline lets through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sbtc_ops.audit.framework import HostContext
from sbtc_ops.config import Settings
from sbtc_ops.discover.load import load_settings
from sbtc_ops.host.http import Malformed, Unreachable, fetch
from sbtc_ops.httpdeadline import AnswerTooLarge, DeadlineExceeded, bounded_request
from sbtc_ops.serve.notify import Notification, Notifier
from sbtc_ops.stacks import read_aggregate_key
from tests.support.cli import CliResult
from tests.support.trickle import TrickleServer, slow_answer, trickle_server

Cli = Callable[..., CliResult]

INTERVAL_S = 0.2  # one byte every 0.2 s: the ~1.7 kB answer would take ~6 minutes


def _gave_up_early(server: TrickleServer) -> None:
    assert server.sent, "the client never connected"
    assert all(sent < len(server.answer) // 4 for sent in server.sent), server.sent


def _stacks_settings(url: str, **stacks: Any) -> Settings:
    overrides = {"stacks": {"endpoints": [url], "retries": 0, **stacks}}
    return load_settings(overrides=overrides, environ={})


def test_bounded_request_gives_up_at_the_deadline() -> None:
    with (
        trickle_server(INTERVAL_S) as server,
        httpx.Client(timeout=30) as client,
        pytest.raises(DeadlineExceeded, match="no complete answer within 1 s"),
    ):
        bounded_request(client, "GET", server.url, deadline_s=1.0, max_bytes=1 << 20)
    _gave_up_early(server)


def test_bounded_request_reads_a_complete_answer() -> None:
    with trickle_server(0.0) as server, httpx.Client(timeout=30) as client:
        response = bounded_request(client, "GET", server.url, deadline_s=30, max_bytes=1 << 20)
    assert response.status_code == 200
    assert response.json() == {"okay": True, "result": "0x03"}
    assert response.headers["x-pad-7"] == "p" * 20


def test_bounded_request_caps_the_body() -> None:
    answer = slow_answer(b"x" * 5000, padding_headers=0)
    with (
        trickle_server(0.0, answer) as server,
        httpx.Client(timeout=30) as client,
        pytest.raises(AnswerTooLarge, match="larger than 4096 bytes"),
    ):
        bounded_request(client, "GET", server.url, deadline_s=30, max_bytes=4096)


def test_stacks_call_read_trickling_headers() -> None:
    with trickle_server(INTERVAL_S) as server:
        settings = _stacks_settings(server.url, timeout_s=1, connect_timeout_s=1)
        reading = read_aggregate_key(settings)
    assert reading.all_failed
    assert reading.outcomes[0].error == "timeout: no complete answer within 1 s"
    _gave_up_early(server)


def test_chain_command_trickling_endpoint_exits_2(cli: Cli) -> None:
    with trickle_server(INTERVAL_S) as server:
        env = {"SBTC_OPS_STACKS__TIMEOUT_S": "1", "SBTC_OPS_STACKS__RETRIES": "0"}
        result = cli("chain", "aggregate-key", "--stacks-url", server.url, env=env)
    assert result.code == 2, result.stderr
    assert "timeout: no complete answer within 1 s" in result.stderr
    assert "Traceback" not in result.stderr
    _gave_up_early(server)


def test_audit_source_trickling(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"state_dir": str(tmp_path / "state"), "audit": {"network_timeout_s": 1.0}}
    )
    ctx = HostContext(settings, root=tmp_path)
    with (
        trickle_server(INTERVAL_S) as server,
        pytest.raises(Unreachable, match="did not answer within 1s"),
    ):
        fetch(ctx, "GET", server.url + "/v2/info", what="the Stacks node")
    _gave_up_early(server)


def test_audit_source_answer_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sbtc_ops.host.http.MAX_ANSWER_BYTES", 1000)
    settings = Settings.model_validate({"state_dir": str(tmp_path / "state")})
    ctx = HostContext(settings, root=tmp_path)
    answer = slow_answer(b"[" + b"1," * 2000 + b"1]", padding_headers=0)
    with (
        trickle_server(0.0, answer) as server,
        pytest.raises(Malformed, match="answered more than 1000 bytes"),
    ):
        fetch(ctx, "GET", server.url + "/osv", what="OSV")


def test_webhook_trickling_is_not_delivered() -> None:
    with trickle_server(INTERVAL_S) as server:
        notifier = Notifier(
            [SecretStr(server.url + "/hook")], [], attempts=2, timeout_s=1.0, sleep=lambda _s: None
        )
        note = Notification("failure", "backup", "error", "it broke", 0.0, "host")
        assert notifier.send(note) == [False]
    assert len(server.sent) == 2
    _gave_up_early(server)
