"""`sbtc-ops chain aggregate-key` / `chain signer-data` against fake Stacks nodes."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest

from sbtc_ops.clarity import Int
from tests.fakes.stacks_node import (
    MAINNET_DEPLOYER,
    TESTNET_DEPLOYER,
    Failure,
    FakeStacksNode,
    html_page,
    http_error,
    invalid_hex,
    okay_false,
    rate_limited,
    slow,
    wrong_type,
)
from tests.support.cli import CliResult

KEY = "03d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967"
OTHER_KEY = "02" + "11" * 32
SIGNERS = [bytes.fromhex("02" + f"{i:02x}" * 32) for i in range(1, 4)]
NO_RETRY = {"SBTC_OPS_STACKS__RETRIES": "0"}

Cli = Callable[..., CliResult]


@pytest.fixture
def nodes() -> Iterator[tuple[FakeStacksNode, FakeStacksNode]]:
    with FakeStacksNode() as first, FakeStacksNode() as second:
        yield first, second


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def urls(*fakes: FakeStacksNode | str) -> list[str]:
    args = []
    for fake in fakes:
        args += ["--stacks-url", fake if isinstance(fake, str) else fake.url]
    return args


def test_endpoints_agree(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    for fake in nodes:
        fake.set_aggregate_key(bytes.fromhex(KEY))
    result = cli("chain", "aggregate-key", *urls(*nodes))
    assert result.code == 0, result.stderr
    assert result.stdout.count(KEY) == 2
    assert "2 of 2 endpoints answered and agree" in result.stdout
    for fake in nodes:
        (request,) = fake.requests
        assert request.tip == "latest"
        assert request.body == {"sender": MAINNET_DEPLOYER, "arguments": []}


def test_json_report(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    for fake in nodes:
        fake.set_aggregate_key(bytes.fromhex(KEY))
    result = cli("chain", "aggregate-key", "--json", *urls(*nodes))
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["status"] == "agree" and document["ok"] is True
    assert document["aggregate_key"] == KEY and document["not_set"] is False
    assert document["deployer"] == MAINNET_DEPLOYER
    assert [e["url"] for e in document["endpoints"]] == [fake.url for fake in nodes]
    assert all(e["aggregate_key"] == KEY for e in document["endpoints"])
    assert document["endpoints"][0]["result"] == "0x0200000021" + KEY


def test_not_set_is_never_reported_as_a_key(
    cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]
) -> None:
    result = cli("chain", "aggregate-key", *urls(*nodes))
    assert result.code == 0, result.stderr
    assert "no aggregate key set yet" in result.stdout
    document = cli("chain", "aggregate-key", "--json", *urls(*nodes)).json()
    assert document["status"] == "not-set"
    assert document["aggregate_key"] is None and document["not_set"] is True
    assert all(e["aggregate_key"] is None and e["not_set"] for e in document["endpoints"])


def test_disagreement_exits_1_naming_each_value(
    cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]
) -> None:
    first, second = nodes
    first.set_aggregate_key(bytes.fromhex(KEY))
    second.set_aggregate_key(bytes.fromhex(OTHER_KEY))
    result = cli("chain", "aggregate-key", *urls(*nodes))
    assert result.code == 1
    assert "disagree" in result.stderr
    assert f"{first.url}: {KEY}" in result.stderr
    assert f"{second.url}: {OTHER_KEY}" in result.stderr
    document = cli("chain", "aggregate-key", "--json", *urls(*nodes)).json()
    assert document["status"] == "disagree" and document["aggregate_key"] is None
    assert [e["aggregate_key"] for e in document["endpoints"]] == [KEY, OTHER_KEY]


def test_no_endpoint_reachable_exits_2_listing_each_error(
    cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]
) -> None:
    first, second = nodes
    first.fail(http_error(500, "boom"))
    second.fail(html_page())
    dead = closed_port_url()
    result = cli("chain", "aggregate-key", *urls(first, second, dead), env=NO_RETRY)
    assert result.code == 2
    assert f"{first.url}: HTTP 500 Internal Server Error: boom" in result.stderr
    assert f"{second.url}: answered HTML instead of JSON" in result.stderr
    assert f"{dead}: connection refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    json_result = cli("chain", "aggregate-key", "--json", *urls(first, dead), env=NO_RETRY)
    assert json_result.code == 2
    document = json_result.json()
    assert document["status"] == "unreachable" and document["ok"] is False
    assert [e["error"] for e in document["endpoints"]] == [
        "HTTP 500 Internal Server Error: boom",
        "connection refused",
    ]


ERROR_SHAPES: list[tuple[Failure, str]] = [
    (
        okay_false('Unchecked(NoSuchContract("x"))'),
        'okay:false, cause: Unchecked(NoSuchContract("x"))',
    ),
    (invalid_hex(), "result is not valid hex"),
    (wrong_type(Int(-3)), "get-current-aggregate-pubkey returned int -3, expected (buff 33)"),
    (http_error(503, "overloaded"), "HTTP 503 Service Unavailable: overloaded"),
    (rate_limited(retry_after=0), "HTTP 429 Too Many Requests (rate limited; retries exhausted)"),
    (slow(5), "timeout: no complete answer within 0.3 s"),
]


def test_each_error_shape_is_reported(cli: Cli) -> None:
    with contextlib.ExitStack() as stack:
        fakes = [stack.enter_context(FakeStacksNode()) for _ in ERROR_SHAPES]
        for fake, (failure, _) in zip(fakes, ERROR_SHAPES, strict=True):
            fake.fail(failure)
        env = {"SBTC_OPS_STACKS__TIMEOUT_S": "0.3", **NO_RETRY}
        result = cli("chain", "aggregate-key", *urls(*fakes), env=env)
    assert result.code == 2
    for fake, (_, message) in zip(fakes, ERROR_SHAPES, strict=True):
        assert f"{fake.url}: {message}" in result.stderr


def test_timeout_from_settings(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    first, second = nodes
    first.fail(slow(5))
    second.set_aggregate_key(bytes.fromhex(KEY))
    result = cli(
        "chain", "aggregate-key", *urls(first, second), env={"SBTC_OPS_STACKS__TIMEOUT_S": "0.3"}
    )
    # The reachable endpoint answers: exit 0, and the slow one is shown as a warning.
    assert result.code == 0, result.stderr
    assert (
        f"warning: {first.url} did not answer: timeout: no complete answer within 0.3 s"
        in result.stderr
    )
    assert KEY in result.stdout


def test_retry_after_is_honoured(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    first, _ = nodes
    first.set_aggregate_key(bytes.fromhex(KEY))
    first.fail(rate_limited(retry_after=1), times=1)
    result = cli("chain", "aggregate-key", *urls(first))
    assert result.code == 0, result.stderr
    earlier, later = first.requests
    assert later.received_at - earlier.received_at >= 0.9


def test_network_flag_selects_the_deployer(cli: Cli) -> None:
    with FakeStacksNode(deployer=TESTNET_DEPLOYER) as fake:
        fake.set_aggregate_key(bytes.fromhex(KEY))
        result = cli("chain", "aggregate-key", "--network", "testnet", "--json", *urls(fake))
        assert result.code == 0, result.stderr
        assert result.json()["deployer"] == TESTNET_DEPLOYER
        assert TESTNET_DEPLOYER in fake.requests[0].path


def test_endpoints_from_the_environment(
    cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]
) -> None:
    first, _ = nodes
    first.set_aggregate_key(bytes.fromhex(KEY))
    result = cli(
        "chain", "aggregate-key", "--json", env={"SBTC_OPS_STACKS__ENDPOINTS": f'["{first.url}"]'}
    )
    assert result.code == 0, result.stderr
    assert result.json()["endpoints"][0]["url"] == first.url


def test_bad_network_is_a_usage_error(cli: Cli) -> None:
    result = cli("chain", "aggregate-key", "--network", "moonnet", "--stacks-url", "http://x")
    assert result.code == 2
    assert "network" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_key_never_goes_over_plain_http_nor_is_printed(
    cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]
) -> None:
    # The operator's own node (first) needs no key; the "hosted API" (second) does, but is
    # reached over plain HTTP here, so the key is not sent even with its host allowed.
    first, second = nodes
    second.require_api_key("sekret-api-key-77")
    env = {
        "SBTC_OPS_STACKS__API_KEY": "sekret-api-key-77",
        "SBTC_OPS_STACKS__API_KEY_HOSTS": '["127.0.0.1"]',
        **NO_RETRY,
    }
    result = cli("chain", "aggregate-key", "--json", *urls(first, second), env=env)
    assert result.code == 0, result.stderr
    assert "HTTP 401" in result.stderr
    assert "sekret-api-key-77" not in result.stdout + result.stderr
    for node in nodes:
        assert all("x-api-key" not in request.headers for request in node.requests)


def test_signer_data(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    principal = f"{MAINNET_DEPLOYER}.sbtc-bootstrap-signers"
    for fake in nodes:
        fake.set_signer_data(bytes.fromhex(KEY), SIGNERS, 2, principal)
    result = cli("chain", "signer-data", *urls(*nodes))
    assert result.code == 0, result.stderr
    assert "threshold: 2" in result.stdout and principal in result.stdout
    document = cli("chain", "signer-data", "--json", *urls(*nodes)).json()
    assert document["signer_data"] == {
        "aggregate_key": KEY,
        "signer_set": [key.hex() for key in SIGNERS],
        "threshold": 2,
        "principal": principal,
    }


def test_signer_data_disagreement(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    first, second = nodes
    first.set_signer_data(bytes.fromhex(KEY), SIGNERS, 2)
    second.set_signer_data(bytes.fromhex(KEY), SIGNERS, 3)
    result = cli("chain", "signer-data", *urls(*nodes))
    assert result.code == 1
    assert "threshold 2" in result.stderr and "threshold 3" in result.stderr


def test_signer_data_initial_state(cli: Cli, nodes: tuple[FakeStacksNode, FakeStacksNode]) -> None:
    first, _ = nodes
    result = cli("chain", "signer-data", "--json", *urls(first))
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "not-set"
    assert result.json()["signer_data"]["aggregate_key"] is None
