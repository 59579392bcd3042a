"""The Stacks RPC client against a fake node speaking the real call-read protocol."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sbtc_ops.clarity import Buffer, ClarityError, Int, List, Tuple, UInt
from sbtc_ops.config import Settings
from sbtc_ops.discover.load import load_settings
from sbtc_ops.stacks import (
    FN_AGGREGATE_KEY,
    FN_SIGNER_DATA,
    NOT_SET,
    RetryPolicy,
    SignerData,
    StacksError,
    call_read_only,
    decode_hex_or_answer,
    get_info,
    read_aggregate_key,
    read_signer_data,
    retry_after_seconds,
)
from tests.fakes.stacks_node import (
    MAINNET_DEPLOYER,
    TESTNET_DEPLOYER,
    Failure,
    FakeStacksNode,
    html_page,
    http_error,
    invalid_hex,
    not_json,
    okay_false,
    rate_limited,
    raw_result,
    slow,
    trickle,
    wrong_type,
)

KEY = bytes.fromhex("03d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967")
OTHER_KEY = bytes.fromhex("02" + "11" * 32)
SIGNERS = [bytes.fromhex("02" + f"{i:02x}" * 32) for i in range(1, 4)]


def make_settings(*urls: str, **stacks: Any) -> Settings:
    """Settings from flags only: no file, no environment."""
    overrides: dict[str, Any] = {"stacks": {"endpoints": list(urls), "retries": 0, **stacks}}
    return load_settings(overrides=overrides, environ={})


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def node() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as fake:
        yield fake


@pytest.fixture
def node2() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as fake:
        yield fake


# -- the request itself --------------------------------------------------------------------


def test_reads_like_the_signer_does(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    reading = read_aggregate_key(make_settings(node.url))
    assert reading.agreed_key == KEY
    (request,) = node.requests
    assert request.method == "POST"
    assert request.path == (
        f"/v2/contracts/call-read/{MAINNET_DEPLOYER}/sbtc-registry/get-current-aggregate-pubkey"
    )
    assert request.tip == "latest"
    assert request.body == {"sender": MAINNET_DEPLOYER, "arguments": []}
    assert request.headers["content-type"] == "application/json"
    assert "x-api-key" not in request.headers


def test_testnet_uses_the_testnet_deployer() -> None:
    with FakeStacksNode(deployer=TESTNET_DEPLOYER) as fake:
        fake.set_aggregate_key(KEY)
        settings = load_settings(
            overrides={"network": "testnet", "stacks": {"endpoints": [fake.url]}}, environ={}
        )
        assert read_aggregate_key(settings).agreed_key == KEY
        assert fake.requests[0].body["sender"] == TESTNET_DEPLOYER


def test_api_key_header_never_goes_over_plain_http_and_is_never_shown(
    node: FakeStacksNode,
) -> None:
    # Even with the node's host listed in stacks.api_key_hosts: plain HTTP never gets the key
    # (which hosts get it over https: tests/test_secrets_leak.py).
    node.require_api_key("right-key-123")
    settings = make_settings(node.url, api_key="right-key-123", api_key_hosts=["127.0.0.1"])
    refused = read_aggregate_key(settings)
    assert "x-api-key" not in {name.lower() for name in node.requests[-1].headers}
    error = refused.outcomes[0].error
    assert error is not None and "HTTP 401" in error and "API key" in error
    assert "right-key-123" not in error


def test_arguments_are_sent_as_hex(node: FakeStacksNode) -> None:
    node.set_value("echo", UInt(9))
    value = call_read_only(node.url, make_settings(), "echo", [UInt(1), Buffer(b"\x01")])
    assert value == UInt(9)
    assert node.requests[0].body["arguments"] == [UInt(1).to_hex(), "0x020000000101"]


def test_the_fake_refuses_bad_requests_like_a_node(node: FakeStacksNode) -> None:
    import httpx

    path = f"{node.url}/v2/contracts/call-read/{MAINNET_DEPLOYER}/sbtc-registry/{FN_AGGREGATE_KEY}"
    bad_sender = httpx.post(path, json={"sender": "nobody", "arguments": []})
    assert bad_sender.status_code == 400
    assert bad_sender.text.startswith("Failed to decode: ")
    no_arguments = httpx.post(path, json={"sender": MAINNET_DEPLOYER})
    assert no_arguments.status_code == 400
    bad_tip = httpx.post(
        path + "?tip=yesterday", json={"sender": MAINNET_DEPLOYER, "arguments": []}
    )
    assert bad_tip.status_code == 400
    assert httpx.get(f"{node.url}/v2/nothing").status_code == 404
    unknown = httpx.post(
        path.replace(FN_AGGREGATE_KEY, "get-nothing"),
        json={"sender": MAINNET_DEPLOYER, "arguments": []},
    )
    assert unknown.json() == {"okay": False, "cause": 'Unchecked(UndefinedFunction("get-nothing"))'}


# -- agreement -------------------------------------------------------------------------


def test_endpoints_that_agree(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node2.set_aggregate_key(KEY)
    reading = read_aggregate_key(make_settings(node.url, node2.url))
    assert reading.agreed_key == KEY
    assert not reading.disagree and not reading.all_failed and not reading.not_set
    assert [o.url for o in reading.outcomes] == [node.url, node2.url]
    assert all(o.ok and o.value == KEY for o in reading.outcomes)


def test_initial_registry_value_is_not_set(node: FakeStacksNode) -> None:
    reading = read_aggregate_key(make_settings(node.url))
    assert reading.not_set
    assert reading.agreed_key is None
    assert reading.outcomes[0].value == NOT_SET


def test_endpoints_that_disagree(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node2.set_aggregate_key(OTHER_KEY)
    reading = read_aggregate_key(make_settings(node.url, node2.url))
    assert reading.disagree
    assert reading.agreed_key is None and not reading.not_set
    assert {o.value for o in reading.outcomes} == {KEY, OTHER_KEY}


def test_a_key_and_not_set_disagree(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    reading = read_aggregate_key(make_settings(node.url, node2.url))
    assert reading.disagree and not reading.not_set


def test_explicit_urls_override_settings(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node2.set_aggregate_key(KEY)
    reading = read_aggregate_key(make_settings(node.url), [node2.url])
    assert reading.agreed_key == KEY
    assert node.requests == []


def test_partial_failure_keeps_each_outcome(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    dead = closed_port_url()
    reading = read_aggregate_key(make_settings(dead, node.url))
    assert reading.agreed_key == KEY
    assert not reading.all_failed and not reading.disagree
    assert [o.url for o in reading.failed] == [dead]
    assert reading.failed[0].error == "connection refused"


def test_endpoints_are_queried_concurrently(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.fail(slow(1.0))
    node2.fail(slow(1.0))
    read_aggregate_key(make_settings(node.url, node2.url))
    first, second = sorted([node.requests[0].received_at, node2.requests[0].received_at])
    # Each node holds its answer for 1 s: sequential calls could not both arrive before that.
    assert second - first < 1.0


# -- every error shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            http_error(500, "database is locked"),
            "HTTP 500 Internal Server Error: database is locked",
        ),
        (http_error(503, ""), "HTTP 503 Service Unavailable"),
        (http_error(400, "Failed to decode: bad sender"), "HTTP 400 Bad Request: Failed to decode"),
        (html_page(), "answered HTML instead of JSON: <!DOCTYPE html>"),
        (not_json(), "answer is not JSON"),
        (invalid_hex(), "result is not valid hex"),
        (
            okay_false('Unchecked(NoSuchContract("x"))'),
            'okay:false, cause: Unchecked(NoSuchContract("x"))',
        ),
        (wrong_type(Int(-3)), "returned int -3, expected (buff 33)"),
        (wrong_type(Buffer(b"\x01\x02")), "not a 33-byte compressed public key"),
        (wrong_type(Buffer(b"\x04" + b"\x00" * 32)), "not a 33-byte compressed public key"),
    ],
)
def test_error_shapes(node: FakeStacksNode, failure: Failure, expected: str) -> None:
    reading = read_aggregate_key(make_settings(node.url))
    assert reading.all_failed is False
    node.fail(failure)
    reading = read_aggregate_key(make_settings(node.url))
    assert reading.all_failed
    error = reading.outcomes[0].error
    assert error is not None and expected in error


def test_result_that_is_not_one_clarity_value(node: FakeStacksNode) -> None:
    node.fail(raw_result("0x0300"))
    error = read_aggregate_key(make_settings(node.url)).outcomes[0].error
    assert error is not None
    assert "not a valid Clarity value: 1 trailing bytes after the value (at byte 1)" in error


def test_connection_refused() -> None:
    reading = read_aggregate_key(make_settings(closed_port_url()))
    assert reading.all_failed
    assert reading.outcomes[0].error == "connection refused"


def test_slow_endpoint_hits_the_timeout(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.fail(slow(5))
    node2.set_aggregate_key(KEY)
    reading = read_aggregate_key(make_settings(node.url, node2.url, timeout_s=0.3))
    assert reading.outcomes[0].error == "timeout: no complete answer within 0.3 s"
    assert reading.agreed_key == KEY


def test_trickling_answer_is_bounded_by_the_total_timeout(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node.fail(trickle(4))  # ~90 bytes, one every ~45 ms: no single read times out
    reading = read_aggregate_key(make_settings(node.url, timeout_s=0.5))
    assert reading.outcomes[0].error == "timeout: no complete answer within 0.5 s"
    node.clear_failures()
    node.fail(trickle(0.2))
    assert read_aggregate_key(make_settings(node.url, timeout_s=2)).agreed_key == KEY


def test_server_errors_are_retried(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node.fail(http_error(502, "bad gateway"), times=2)
    reading = read_aggregate_key(
        make_settings(node.url, retries=2),
        policy=RetryPolicy(retries=2, max_wait_s=30.0, backoff_s=0.01),
    )
    assert reading.agreed_key == KEY
    assert len(node.requests) == 3


def test_retry_after_is_honoured(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node.fail(rate_limited(retry_after=1), times=1)
    reading = read_aggregate_key(make_settings(node.url, retries=1))
    assert reading.agreed_key == KEY
    first, second = node.requests
    assert second.received_at - first.received_at >= 0.9


def test_retry_after_wait_is_capped(node: FakeStacksNode) -> None:
    node.set_aggregate_key(KEY)
    node.fail(rate_limited(retry_after=3600), times=1)
    reading = read_aggregate_key(make_settings(node.url, retries=1, max_retry_wait_s=0.2))
    assert reading.agreed_key == KEY
    first, second = node.requests
    assert 0.15 <= second.received_at - first.received_at < 3600


def test_rate_limit_with_retries_exhausted(node: FakeStacksNode) -> None:
    node.fail(rate_limited(retry_after=0))
    reading = read_aggregate_key(make_settings(node.url, retries=2))
    error = reading.outcomes[0].error
    assert error is not None and error.startswith("HTTP 429") and "rate limited" in error
    assert len(node.requests) == 3


def test_client_errors_are_not_retried(node: FakeStacksNode) -> None:
    node.fail(http_error(404, "Chain tip not found"))
    reading = read_aggregate_key(make_settings(node.url, retries=3))
    assert reading.all_failed
    assert len(node.requests) == 1


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# -- signer data --------------------------------------------------------------------------


def test_signer_data(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    principal = f"{MAINNET_DEPLOYER}.sbtc-signers"
    for fake in (node, node2):
        fake.set_signer_data(KEY, SIGNERS, 2, principal)
    reading = read_signer_data(make_settings(node.url, node2.url))
    expected = SignerData(KEY, SIGNERS, 2, principal)
    assert reading.agreed == expected
    assert reading.agreed_key == KEY and not reading.not_set
    assert node.requests[0].path.endswith("/sbtc-registry/get-current-signer-data")


def test_signer_data_initial_state(node: FakeStacksNode) -> None:
    reading = read_signer_data(make_settings(node.url))
    assert reading.agreed == SignerData(None, [], 0, MAINNET_DEPLOYER)
    assert reading.not_set


def test_signer_data_disagreement(node: FakeStacksNode, node2: FakeStacksNode) -> None:
    node.set_signer_data(KEY, SIGNERS, 2)
    node2.set_signer_data(KEY, SIGNERS, 3)
    reading = read_signer_data(make_settings(node.url, node2.url))
    assert reading.disagree and reading.agreed is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UInt(1), "expected a tuple"),
        (Tuple({"current-aggregate-pubkey": Buffer(KEY)}), "without current-signature-threshold"),
        (
            Tuple(
                {
                    "current-aggregate-pubkey": Buffer(KEY),
                    "current-signature-threshold": Int(2),
                    "current-signer-principal": Buffer(b""),
                    "current-signer-set": List(()),
                }
            ),
            "threshold is int",
        ),
        (
            Tuple(
                {
                    "current-aggregate-pubkey": Buffer(KEY),
                    "current-signature-threshold": UInt(2),
                    "current-signer-principal": Buffer(b""),
                    "current-signer-set": List(()),
                }
            ),
            "principal is (buff 0)",
        ),
    ],
)
def test_signer_data_of_the_wrong_shape(node: FakeStacksNode, value: Any, expected: str) -> None:
    node.set_value(FN_SIGNER_DATA, value)
    reading = read_signer_data(make_settings(node.url))
    error = reading.outcomes[0].error
    assert error is not None and expected in error


# -- /v2/info and helpers ------------------------------------------------------------------


def test_get_info(node: FakeStacksNode) -> None:
    info = get_info(node.url, make_settings())
    assert info["network_id"] == 1 and info["is_fully_synced"] is True
    assert node.requests[0].path == "/v2/info"


def test_get_info_errors(node: FakeStacksNode) -> None:
    node.fail(html_page(), on="/v2/info")
    with pytest.raises(StacksError, match="HTML instead of JSON"):
        get_info(node.url, make_settings())
    with pytest.raises(StacksError, match="connection refused"):
        get_info(closed_port_url(), make_settings())


def test_decode_hex_or_answer() -> None:
    assert decode_hex_or_answer(" 0x0200000001ff\n") == Buffer(b"\xff")
    assert decode_hex_or_answer('{"okay": true, "result": "0x03"}').to_text() == "true"
    with pytest.raises(StacksError, match="okay:false, cause: NotReadOnly"):
        decode_hex_or_answer('{"okay": false, "cause": "NotReadOnly"}')
    with pytest.raises(ClarityError):
        decode_hex_or_answer("{not json")
    with pytest.raises(ClarityError, match="no input"):
        decode_hex_or_answer("  ")


def test_passwords_in_urls_are_redacted_for_display() -> None:
    url = closed_port_url().replace("http://", "http://user:hunter2pass@")
    outcome = read_aggregate_key(make_settings(url)).outcomes[0]
    assert "hunter2pass" not in outcome.display_url
    assert "hunter2pass" not in (outcome.error or "")


def test_nothing_outlives_a_read(node: FakeStacksNode) -> None:
    node.fail(slow(0.5), times=1)
    read_aggregate_key(make_settings(node.url, node.url))
    assert not [t for t in threading.enumerate() if t.name.startswith("stacks")]


def test_the_fake_node_stops_even_with_a_sleeping_handler() -> None:
    fake = FakeStacksNode().start()
    fake.fail(slow(30))
    reading_thread = threading.Thread(
        target=read_aggregate_key, args=(make_settings(fake.url, timeout_s=0.2),)
    )
    reading_thread.start()
    reading_thread.join()
    fake.stop()
    assert not fake.running
    assert not [t for t in threading.enumerate() if "process_request" in t.name]
