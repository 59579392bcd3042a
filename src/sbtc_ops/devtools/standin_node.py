"""A local stand-in for a Stacks node's read-only RPC, for `sbtc-ops demo`. Not the chain.

It serves `sbtc-registry` of one deployer over the node's real call-read protocol, so the
demo's restore drill reads "the chain" through the same client code as a real run:

* `POST /v2/contracts/call-read/{deployer}/sbtc-registry/{function}[?tip=…]` with a JSON body
  `{"sender": "<principal>", "arguments": [...]}` answers `{"okay": true, "result": "0x…"}`
  for the registry getters sbtc-ops reads (`get-current-aggregate-pubkey`,
  `get-current-signer-data` and its parts), `{"okay": false, "cause": …}` for any other
  function or contract, as a node does;
* a malformed request gets 400, any other path 404.

It listens on 127.0.0.1 only, on a port the kernel picks, in a background thread; leaving the
`with` block stops it and joins its threads. Every value it serves is whatever it was given:
it proves nothing about any real chain, and the demo says so.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from sbtc_ops.clarity import (
    Buffer,
    ClarityError,
    ClarityValue,
    List,
    Tuple,
    UInt,
    principal_from_text,
)

REGISTRY = "sbtc-registry"
MAX_BODY = 64 * 1024  # a call-read body with no arguments is tiny; refuse anything large
LABEL = "local stand-in, not the chain"
_CALL_READ = re.compile(
    r"/v2/contracts/call-read/(?P<address>[^/]+)/(?P<contract>[^/]+)/(?P<fn>[^/]+)"
)


def registry_values(
    aggregate_key: bytes, signer_set: Sequence[bytes], threshold: int, principal: str
) -> dict[str, ClarityValue]:
    """The registry getters' answers for one signer set, consistent with each other."""
    values: dict[str, ClarityValue] = {
        "get-current-aggregate-pubkey": Buffer(aggregate_key),
        "get-current-signer-set": List(tuple(Buffer(key) for key in signer_set)),
        "get-current-signature-threshold": UInt(threshold),
        "get-current-signer-principal": principal_from_text(principal),
    }
    values["get-current-signer-data"] = Tuple(
        {
            "current-aggregate-pubkey": values["get-current-aggregate-pubkey"],
            "current-signer-set": values["get-current-signer-set"],
            "current-signature-threshold": values["get-current-signature-threshold"],
            "current-signer-principal": values["get-current-signer-principal"],
        }
    )
    return values


class StandInNode:
    """`with StandInNode(deployer, values) as node:` serves them at `node.url`."""

    def __init__(self, deployer: str, values: dict[str, ClarityValue]) -> None:
        self.deployer = deployer
        self.values = dict(values)
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in node is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        handler = type("Handler", (_Handler,), {"node": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = False  # joined on shutdown: nothing outlives the `with`
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="stand-in-node"
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()  # joins the handler threads (block_on_close)
        if thread is not None:
            thread.join()

    def answer(self, path: str, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON document or text) for one POST, as a node answers it."""
        match = _CALL_READ.fullmatch(urlsplit(path).path)
        if match is None:
            return 404, "Not found"
        problem = _bad_request(body)
        if problem:
            return 400, f"Failed to decode: {problem}"
        self.requests += 1
        if (match["address"], match["contract"]) != (self.deployer, REGISTRY):
            cause = f'Unchecked(NoSuchContract("{match["address"]}.{match["contract"]}"))'
            return 200, {"okay": False, "cause": cause}
        value = self.values.get(match["fn"])
        if value is None:
            return 200, {"okay": False, "cause": f'Unchecked(UndefinedFunction("{match["fn"]}"))'}
        return 200, {"okay": True, "result": value.to_hex()}


def _bad_request(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(document, dict):
        return "the body is not a JSON object"
    sender = document.get("sender")
    try:
        principal_from_text(sender if isinstance(sender, str) else "")
    except ClarityError:
        return f"invalid sender {sender!r}"
    if not isinstance(document.get("arguments"), list):
        return "missing arguments"
    return None


class _Handler(BaseHTTPRequestHandler):
    node: StandInNode
    server_version = "sbtc-ops-stand-in"
    sys_version = ""
    timeout = 10  # a client that never finishes its request cannot pin a thread

    def log_message(self, format: str, *args: Any) -> None:
        return  # the demo reports what matters; no access log on stderr

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(400, "Failed to decode: bad Content-Length")
            return
        status, document = self.node.answer(self.path, self.rfile.read(length))
        self._send(status, document)

    def do_GET(self) -> None:
        self._send(404, "Not found")

    def _send(self, status: int, document: Any) -> None:
        if isinstance(document, str):
            body, kind = document.encode(), "text/plain"
        else:
            body, kind = json.dumps(document).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
