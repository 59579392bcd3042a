"""A fake Stacks node for tests: a real HTTP server speaking the node's read-only RPC.

The Stacks node cannot run in tests, so this small server (a thread in the test process,
on 127.0.0.1, random port) answers exactly like one for what sbtc-ops uses:

* ``POST /v2/contracts/call-read/{address}/{contract}/{function}[?tip=latest|<64 hex>]``
  with a JSON body ``{"sender": "<principal>", "sponsor"?: …, "arguments": ["0x…", …]}``:
  - 200 ``{"okay": true, "result": "0x<serialized Clarity value>"}``;
  - 200 ``{"okay": false, "cause": "Unchecked(UndefinedFunction(\\"f\\"))"}`` for an unknown
    function, ``…NoSuchContract…`` for a contract that is not deployed;
  - 400 plain text ``Failed to decode: …`` for a bad body, sender, argument or tip;
  - 404 plain text for paths that are not a call-read route.
* ``GET /v2/info``: a realistic node info document (``node.info`` can be edited).

By default it hosts ``sbtc-registry`` of the mainnet deployer in its initial state:
the aggregate key is the 1-byte buffer ``0x00`` ("not set"), the signer set is empty,
the threshold ``u0`` and the signer principal the deployer.

Usage::

    from tests.fakes.stacks_node import FakeStacksNode, http_error, rate_limited

    with FakeStacksNode() as node:
        node.set_aggregate_key(bytes.fromhex("03d8…"))
        node.set_signer_data(key, [key1, key2], threshold=2, principal="SM3…")
        node.fail(rate_limited(retry_after=1), times=1)  # then answers normally
        ... call node.url ...
        assert node.requests[0].body["sender"] == node.deployer

Failure modes (``node.fail(failure, times=None, on=None)``; ``times=None`` = every request,
``on`` = a function name, ``"/v2/info"``, or None for every request):
``http_error(status, body)``, ``html_page()``, ``slow(seconds)`` (answers normally after
the delay, unless the node is stopped first), ``trickle(seconds)`` (a normal answer whose
body dribbles in over that time), ``invalid_hex()``, ``okay_false(cause)``,
``rate_limited(retry_after)`` (429 with ``Retry-After``), ``wrong_type(value)`` (answers
with any Clarity value), ``raw_result("0x…")`` (any result string), ``not_json()``. ``node.clear_failures()`` removes them.
``node.require_api_key("k")`` makes it answer 401 unless ``x-api-key: k`` is sent,
like a hosted API.

Every request is recorded in ``node.requests`` (method, path, query, headers, parsed
body, monotonic receive time), so tests can assert sender, tip, arguments and retries.
The server is stopped, and its handler threads joined, when the ``with`` block ends.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sbtc_ops.clarity import (
    Buffer,
    ClarityError,
    ClarityValue,
    List,
    Tuple,
    UInt,
    decode,
    decode_hex,
    principal_from_text,
)
from tests.fakes.http_base import ThreadedHttpServer

MAINNET_DEPLOYER = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
TESTNET_DEPLOYER = "SNGWPN3XDAQE673MXYXF81016M50NHF5X5PWWM70"
REGISTRY = "sbtc-registry"

_ADDRESS = r"S[0123456789ABCDEFGHJKMNPQRSTVWXYZ]{28,41}"
_CONTRACT = r"[a-zA-Z]([a-zA-Z0-9]|[-_]){0,39}"
_FUNCTION = r"[a-zA-Z]([a-zA-Z0-9]|[-_!?+<>=/*]){0,127}"
_CALL_READ = re.compile(
    rf"/v2/contracts/call-read/(?P<address>{_ADDRESS})/(?P<contract>{_CONTRACT})"
    rf"/(?P<function>{_FUNCTION})"
)


# -- failures --------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """How to misbehave for one request. Build with the helper functions below."""

    kind: str
    status: int = 500
    body: str = ""
    seconds: float = 0.0
    retry_after: str | None = None
    value: ClarityValue | None = None


def http_error(status: int = 500, body: str = "Internal Server Error") -> Failure:
    return Failure("http", status=status, body=body)


def html_page() -> Failure:
    return Failure("html", status=200)


def slow(seconds: float) -> Failure:
    return Failure("slow", seconds=seconds)


def trickle(seconds: float) -> Failure:
    """Answer normally, but send the body one byte at a time spread over `seconds`."""
    return Failure("trickle", seconds=seconds)


def invalid_hex() -> Failure:
    return raw_result("0xnot-hex")


def raw_result(result: str) -> Failure:
    """Answer `{"okay": true, "result": <result>}` verbatim (e.g. bytes that are no value)."""
    return Failure("raw-result", body=result)


def okay_false(cause: str = 'Unchecked(NoSuchContract("sbtc-registry"))') -> Failure:
    return Failure("okay-false", body=cause)


def rate_limited(retry_after: float | str = 1) -> Failure:
    return Failure("429", status=429, retry_after=str(retry_after))


def wrong_type(value: ClarityValue) -> Failure:
    return Failure("value", value=value)


def not_json() -> Failure:
    return Failure("not-json")


@dataclass
class _Armed:
    failure: Failure
    remaining: int | None
    on: str | None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    received_at: float
    function: str | None = None

    @property
    def tip(self) -> str | None:
        values = self.query.get("tip")
        return values[0] if values else None


# -- the node --------------------------------------------------------------------------


@dataclass
class _Contract:
    functions: dict[str, ClarityValue] = field(default_factory=dict)


class FakeStacksNode(ThreadedHttpServer):
    """A call-read + /v2/info server on 127.0.0.1; use as a context manager."""

    def __init__(self, deployer: str = MAINNET_DEPLOYER, contract: str = REGISTRY) -> None:
        super().__init__()
        self.deployer = deployer
        self.contract = contract
        self._lock = threading.Lock()
        self._contracts: dict[tuple[str, str], _Contract] = {(deployer, contract): _Contract()}
        self._failures: list[_Armed] = []
        self._api_key: str | None = None
        self.requests: list[RecordedRequest] = []
        self.info: dict[str, Any] = _default_info()
        self.set_signer_data(None, [], 0, deployer)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"node": self})

    # configuration

    def set_value(self, function: str, value: ClarityValue | bytes | str) -> None:
        """What `function` of the registry returns (a value, its serialization, or hex)."""
        if isinstance(value, bytes):
            value = decode(value)
        elif isinstance(value, str):
            value = decode_hex(value)
        with self._lock:
            self._contracts[(self.deployer, self.contract)].functions[function] = value

    def set_aggregate_key(self, key: bytes | None) -> None:
        """The registry's current aggregate key; None means the initial 0x00 ("not set")."""
        self.set_value("get-current-aggregate-pubkey", Buffer(key if key is not None else b"\0"))
        self._refresh_signer_data()

    def set_signer_data(
        self,
        aggregate_key: bytes | None,
        signer_set: Sequence[bytes],
        threshold: int,
        principal: str | None = None,
    ) -> None:
        """Set every registry read at once, consistently."""
        self.set_value("get-current-aggregate-pubkey", Buffer(aggregate_key or b"\0"))
        self.set_value("get-current-signer-set", List(tuple(Buffer(k) for k in signer_set)))
        self.set_value("get-current-signature-threshold", UInt(threshold))
        self.set_value(
            "get-current-signer-principal", principal_from_text(principal or self.deployer)
        )
        self._refresh_signer_data()

    def _refresh_signer_data(self) -> None:
        functions = self._contracts[(self.deployer, self.contract)].functions
        self.set_value(
            "get-current-signer-data",
            Tuple(
                {
                    "current-aggregate-pubkey": functions["get-current-aggregate-pubkey"],
                    "current-signer-set": functions["get-current-signer-set"],
                    "current-signature-threshold": functions["get-current-signature-threshold"],
                    "current-signer-principal": functions["get-current-signer-principal"],
                }
            ),
        )

    def fail(self, failure: Failure, times: int | None = None, on: str | None = None) -> None:
        """Misbehave for the next `times` matching requests (None: until cleared)."""
        with self._lock:
            self._failures.append(_Armed(failure, times, on))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def require_api_key(self, key: str | None) -> None:
        self._api_key = key

    def requests_for(self, function: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.function == function]

    # internals used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_failure(self, target: str) -> Failure | None:
        with self._lock:
            for armed in self._failures:
                if armed.on not in (None, target):
                    continue
                if armed.remaining is not None:
                    if armed.remaining <= 0:
                        continue
                    armed.remaining -= 1
                return armed.failure
        return None

    def _lookup(self, address: str, contract: str) -> _Contract | None:
        with self._lock:
            return self._contracts.get((address, contract))


def _default_info() -> dict[str, Any]:
    return {
        "peer_version": 402653196,
        "pox_consensus": "17f76e597bab45646956f38dd39573085d72cbc0",
        "burn_block_height": 871208,
        "stable_pox_consensus": "8e0561978fc5506b68a589c402dad97e862edb59",
        "stable_burn_block_height": 871201,
        "server_version": "stacks-node 3.1.0.0.5 (release/3.1.0.0.5:6e33d7b, release build, linux [x86_64])",
        "network_id": 1,
        "parent_network_id": 3652501241,
        "stacks_tip_height": 1234567,
        "stacks_tip": "b1807a2d3f7f8c1922f7e1d97827bb2855c31c6be7c5a1ab3bc4e5d9d5bd25f3",
        "stacks_tip_consensus_hash": "17f76e597bab45646956f38dd39573085d72cbc0",
        "genesis_chainstate_hash": "74237aa39aa50a83de11a4f53e9d3bb7d43461d1de9873f402e5453ae60bc59b",
        "unanchored_tip": None,
        "unanchored_seq": None,
        "tenure_height": 183112,
        "exit_at_block_height": None,
        "is_fully_synced": True,
        "node_public_key": "029e2fa1ba4dd3fa2b4ff9c5b8d2a7f27b0c5a46d46b5a0a1a1c1d4a0bd8c1ee2f",
        "node_public_key_hash": "e26cce8f6abe06b9fc81c3b11bda9edd4d3c7b8c",
        "last_pox_anchor": None,
        "stackerdbs": [],
    }


class _Handler(BaseHTTPRequestHandler):
    node: FakeStacksNode
    server_version = "stacks-node"
    sys_version = ""
    timeout = 10  # a client that never sends its request cannot pin a thread forever
    _trickle_s = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output quiet

    # responses

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self._trickle_s and body:
                self.wfile.flush()
                gap = self._trickle_s / len(body)
                for index in range(len(body)):
                    if self.node._stopping.wait(gap):
                        return
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer to

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain")

    # routing

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        request = self._recorded(parts.path, parts.query, b"", None, None)
        if self._misbehaved("/v2/info", request):
            return
        if parts.path == "/v2/info":
            self._json(200, self.node.info)
        else:
            self._text(404, "Not found")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        match = _CALL_READ.fullmatch(parts.path)
        function = match["function"] if match else None
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = self._recorded(parts.path, parts.query, raw, body, function)
        if match is None:
            self._text(404, "Not found")
            return
        if self._misbehaved(function or "", request):
            return
        problem = _check_call_read(parts.query, raw, body)
        if problem:
            self._text(400, f"Failed to decode: {problem}")
            return
        contract = self.node._lookup(match["address"], match["contract"])
        if contract is None:
            cause = f'Unchecked(NoSuchContract("{match["address"]}.{match["contract"]}"))'
            self._json(200, {"okay": False, "cause": cause})
            return
        value = contract.functions.get(match["function"])
        if value is None:
            cause = f'Unchecked(UndefinedFunction("{match["function"]}"))'
            self._json(200, {"okay": False, "cause": cause})
            return
        self._json(200, {"okay": True, "result": value.to_hex()})

    def _recorded(
        self, path: str, query: str, raw: bytes, body: Any, function: str | None
    ) -> RecordedRequest:
        request = RecordedRequest(
            method=self.command,
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            raw_body=raw,
            body=body,
            received_at=time.monotonic(),
            function=function,
        )
        self.node._record(request)
        return request

    def _misbehaved(self, target: str, request: RecordedRequest) -> bool:
        """Apply an API-key check or an armed failure; True when the answer was sent."""
        if (
            self.node._api_key is not None
            and request.headers.get("x-api-key") != self.node._api_key
        ):
            self._json(401, {"error": "Unauthorized", "message": "Missing or invalid API key"})
            return True
        failure = self.node._next_failure(target)
        if failure is None:
            return False
        if failure.kind == "trickle":
            self._trickle_s = failure.seconds
            return False
        if failure.kind == "slow":
            # Interruptible, so stopping the node never waits for a sleeping handler.
            return bool(self.node._stopping.wait(failure.seconds))
        if failure.kind == "http":
            self._text(failure.status, failure.body)
        elif failure.kind == "html":
            page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif failure.kind == "raw-result":
            self._json(200, {"okay": True, "result": failure.body})
        elif failure.kind == "okay-false":
            self._json(200, {"okay": False, "cause": failure.body})
        elif failure.kind == "429":
            headers = {"Retry-After": failure.retry_after or "1"}
            self._send(429, b'{"error":"Too Many Requests"}', "application/json", headers)
        elif failure.kind == "value":
            assert failure.value is not None
            self._json(200, {"okay": True, "result": failure.value.to_hex()})
        elif failure.kind == "not-json":
            self._text(200, "this is not json")
        return True


def _check_call_read(query: str, raw: bytes, body: Any) -> str | None:
    """What the node would refuse in a call-read request, or None."""
    tips = parse_qs(query, keep_blank_values=True).get("tip")
    if tips and not (tips[0] in ("latest", "") or re.fullmatch(r"[0-9a-fA-F]{64}", tips[0])):
        return f"invalid tip {tips[0]!r}"
    if body is None:
        return "JSON body could not be parsed" if raw else "missing JSON body"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    sender = body.get("sender")
    if not isinstance(sender, str):
        return "missing sender"
    try:
        principal_from_text(sender)
    except ClarityError:
        return f"invalid sender {sender!r}"
    arguments = body.get("arguments")
    if not isinstance(arguments, list):
        return "missing arguments"
    for argument in arguments:
        if not isinstance(argument, str):
            return f"argument {argument!r} is not a hex string"
        try:
            decode_hex(argument)
        except ClarityError as exc:
            return f"invalid argument {argument!r}: {exc}"
    return None


__all__ = [
    "MAINNET_DEPLOYER",
    "TESTNET_DEPLOYER",
    "Failure",
    "FakeStacksNode",
    "RecordedRequest",
    "html_page",
    "http_error",
    "invalid_hex",
    "not_json",
    "okay_false",
    "rate_limited",
    "raw_result",
    "slow",
    "trickle",
    "wrong_type",
]
