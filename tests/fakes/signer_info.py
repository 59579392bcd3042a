"""A fake sBTC signer event-observer server: ``GET /info`` (signer/src/api/info.rs).

The document has ``bitcoin.{signer_tip, node_tip, node_chain, node_version,
node_subversion}``, ``stacks.{signer_tip, node_tip, node_bitcoin_block_height,
node_version}``, ``dkg.{rounds, current_aggregate_key, contract_aggregate_key}``,
``config`` (network, deployer, bootstrap_signatures_required, …), ``build_info`` and
``timestamp``; tips are ``{"block_hash", "block_height"}`` or null, keys are compressed
public keys in hex (no 0x) or null. Edit ``fake.info`` or use the setters. Other paths: 404.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.http_base import LocalServer, Request, Response, json_response, text_response

AGGREGATE_KEY = "02" + "5c" * 32


def _tip(height: int, fill: str) -> dict[str, Any]:
    return {"block_hash": fill * 32, "block_height": height}


class FakeSignerInfo(LocalServer):
    server_header = "axum"

    def __init__(self, key: str | None = AGGREGATE_KEY) -> None:
        super().__init__()
        self.info: dict[str, Any] = {
            "bitcoin": {
                "signer_tip": _tip(871210, "0a"),
                "node_tip": _tip(871210, "0a"),
                "node_chain": "main",
                "node_version": 280100,
                "node_subversion": "/Satoshi:28.1.0/",
            },
            "stacks": {
                "signer_tip": _tip(1234567, "b1"),
                "node_tip": _tip(1234567, "b1"),
                "node_bitcoin_block_height": 871210,
                "node_version": "stacks-node 3.1.0.0.5 (release/3.1.0.0.5:6e33d7b, release build, linux [x86_64])",
            },
            "dkg": {"rounds": 2, "current_aggregate_key": key, "contract_aggregate_key": key},
            "config": {
                "network": "mainnet",
                "deployer": "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4",
                "bootstrap_signatures_required": 11,
            },
            "build_info": {
                "rust_version": "1.84.0",
                "git_revision": "abc123",
                "target_arch": "x86_64",
                "target_env_abi": "gnu",
            },
            "timestamp": "2026-11-24 22:00:00.0 +00:00:00",
        }

    def set_tips(self, chain: str, signer: int | None, node: int | None) -> None:
        section = self.info[chain]
        fill = "0a" if chain == "bitcoin" else "b1"
        section["signer_tip"] = None if signer is None else _tip(signer, fill)
        section["node_tip"] = None if node is None else _tip(node, fill)

    def set_keys(self, current: str | None, contract: str | None) -> None:
        self.info["dkg"]["current_aggregate_key"] = current
        self.info["dkg"]["contract_aggregate_key"] = contract

    def route(self, request: Request) -> Response:
        if request.path == "/info" and request.method == "GET":
            return json_response(200, self.info)
        return text_response(404, "")
