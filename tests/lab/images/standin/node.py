#!/usr/bin/env python3
"""Stand-in for bitcoind (JSON-RPC) or a Stacks node (/v2/info, and the sbtc-registry
read-only calls answered from /stacks/registry.json: {function: "0x<Clarity value>"},
written by the test fixture), on the reference ports."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KIND = sys.argv[1]
PORT = int(sys.argv[2])
BITCOIN = {
    "getblockchaininfo": {
        "chain": "main",
        "blocks": 880600,
        "headers": 880600,
        "bestblockhash": "00" * 32,
        "pruned": False,
        "initialblockdownload": False,
    },
    "getnetworkinfo": {"version": 280100, "subversion": "/Satoshi:28.1.0/"},
    "getindexinfo": {"txindex": {"synced": True, "best_block_height": 880600}},
}
STACKS_INFO = {
    "server_version": "stacks-node 3.1.0.0.8 (lab stand-in)",
    "network_id": 1,
    "burn_block_height": 880600,
    "stacks_tip_height": 1203600,
    "stacks_tip": "ab" * 32,
}


class Handler(BaseHTTPRequestHandler):
    def reply(self, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if KIND == "stacks" and self.path.startswith("/v2/info"):
            self.reply(STACKS_INFO)
        else:
            self.send_error(404)

    def call_read(self) -> None:
        function = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        try:
            answers = json.loads(Path("/stacks/registry.json").read_text())
        except (OSError, ValueError):
            answers = {}
        if function in answers:
            self.reply({"okay": True, "result": answers[function]})
        else:
            self.reply({"okay": False, "cause": f'Unchecked(UndefinedFunction("{function}"))'})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if KIND == "stacks" and self.path.startswith("/v2/contracts/call-read/"):
            self.call_read()
            return
        try:
            request = json.loads(body)
        except ValueError:
            self.send_error(400)
            return
        method = request.get("method") if isinstance(request, dict) else None
        self.reply(
            {
                "result": BITCOIN.get(method),
                "error": None if method in BITCOIN else {"code": -32601},
                "id": request.get("id") if isinstance(request, dict) else None,
            }
        )

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
