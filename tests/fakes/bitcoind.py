"""A fake Bitcoin Core for tests: the JSON-RPC server of bitcoind, on 127.0.0.1.

Speaks what bitcoind's HTTP server does (src/httprpc.cpp, src/rpc/request.cpp):

* POST only (others 405); HTTP basic auth `user:password` checked before anything else —
  a missing or wrong password is 401 with an empty body and ``WWW-Authenticate: Basic
  realm="jsonrpc"``;
* JSON-RPC 1.0 (legacy, no ``"jsonrpc"`` or ``"1.0"``): ``{"result": …, "error": null,
  "id": …}``; an error sets ``result`` null, ``error`` ``{"code", "message"}`` and the HTTP
  status: 404 for an unknown method (-32601), 500 for the rest;
* JSON-RPC 2.0 (``"jsonrpc": "2.0"``, bitcoind ≥ 28): HTTP 200 with either ``result`` or
  ``error`` (and ``"jsonrpc": "2.0"``);
* batches (a JSON array) answered element by element.

Methods: getblockchaininfo, getnetworkinfo, getindexinfo (edit ``fake.blockchain``,
``fake.network``, ``fake.indexes``). ``fake.rpc_error(method, code, message)`` makes a
method answer with an error object (e.g. -28 "Loading block index…", the warm-up error).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.fakes.http_base import LocalServer, Request, Response, json_response

RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700
RPC_IN_WARMUP = -28


def default_blockchain_info(blocks: int = 871210) -> dict[str, Any]:
    return {
        "chain": "main",
        "blocks": blocks,
        "headers": blocks,
        "bestblockhash": "00000000000000000001a0c9b6a1f5c8a7a5b8c2d7b3c0e0f1e2d3c4b5a69788",
        "difficulty": 102289407543323.8,
        "time": 1732486000,
        "mediantime": 1732484000,
        "verificationprogress": 0.9999987,
        "initialblockdownload": False,
        "chainwork": "0000000000000000000000000000000000000000a0b1c2d3e4f5a6b7c8d9e0f1",
        "size_on_disk": 700_000_000_000,
        "pruned": False,
        "warnings": [],
    }


def default_network_info(version: int = 280100) -> dict[str, Any]:
    major, minor = version // 10000, version // 100 % 100
    return {
        "version": version,
        "subversion": f"/Satoshi:{major}.{minor}.0/",
        "protocolversion": 70016,
        "localservices": "0000000000000c09",
        "localrelay": True,
        "timeoffset": 0,
        "networkactive": True,
        "connections": 10,
        "connections_in": 0,
        "connections_out": 10,
        "networks": [],
        "relayfee": 0.00001,
        "incrementalfee": 0.00001,
        "localaddresses": [],
        "warnings": [],
    }


class FakeBitcoind(LocalServer):
    server_header = "bitcoin-json-rpc/v28.1.0"

    def __init__(self, user: str = "bitcoin", password: str = "rpc-pass-123") -> None:  # noqa: S107 - test fixture
        super().__init__()
        self.user = user
        self.password = password
        self.blockchain = default_blockchain_info()
        self.network = default_network_info()
        self.indexes: dict[str, Any] = {"txindex": {"synced": True, "best_block_height": 871210}}
        self._errors: dict[str, tuple[int, str]] = {}

    def rpc_url(self, password: str | None = None) -> str:
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    def rpc_error(self, method: str, code: int, message: str) -> None:
        self._errors[method] = (code, message)

    def route(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, b"JSONRPC server handles only POST requests", "text/html")
        if not self._authorized(request.headers.get("authorization", "")):
            return Response(401, b"", "text/html", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
        try:
            call = json.loads(request.body)
        except ValueError:
            return self._reply(None, None, (RPC_PARSE_ERROR, "Parse error"), legacy=True)
        if isinstance(call, list):
            answers = [self._answer(item) for item in call]
            return Response(200, json.dumps([a for a, _ in answers]).encode())
        document, status = self._answer(call)
        return Response(status, json.dumps(document).encode())

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except ValueError:
            return False
        return decoded == f"{self.user}:{self.password}"

    def _answer(self, call: Any) -> tuple[dict[str, Any], int]:
        legacy = not (isinstance(call, dict) and call.get("jsonrpc") == "2.0")
        request_id = call.get("id") if isinstance(call, dict) else None
        method = call.get("method") if isinstance(call, dict) else None
        if method in self._errors:
            return self._document(request_id, None, self._errors[method], legacy)
        results = {
            "getblockchaininfo": self.blockchain,
            "getnetworkinfo": self.network,
            "getindexinfo": self.indexes,
        }
        if method not in results:
            return self._document(
                request_id, None, (RPC_METHOD_NOT_FOUND, "Method not found"), legacy
            )
        return self._document(request_id, results[str(method)], None, legacy)

    def _reply(
        self, request_id: Any, result: Any, error: tuple[int, str] | None, *, legacy: bool
    ) -> Response:
        document, status = self._document(request_id, result, error, legacy)
        return json_response(status, document)

    @staticmethod
    def _document(
        request_id: Any, result: Any, error: tuple[int, str] | None, legacy: bool
    ) -> tuple[dict[str, Any], int]:
        error_object = {"code": error[0], "message": error[1]} if error else None
        if not legacy:
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
            body.update({"error": error_object} if error_object else {"result": result})
            return body, 200
        status = 200
        if error is not None:
            status = 404 if error[0] == RPC_METHOD_NOT_FOUND else 500
        return {"result": result, "error": error_object, "id": request_id}, status
