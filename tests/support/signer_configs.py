"""Signer configurations of each release's shape, written from the release table's keys.

`config_for("1.2.0")` gives the nested document a v1.2.0 signer reads (every key that release
knows, with a plausible value); `to_toml` writes it. Tests plant drift by adding or dropping
keys. Sample keys are fixed test values, never real signers' keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from coincurve import PrivateKey

from sbtc_ops.signer.knowledge import load

MAINNET_DEPLOYER = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
PRIVATE_KEY = "7a" * 32  # a test key, not the published devnet key


def signer_keys(count: int, seed: int = 1) -> list[str]:
    return [
        PrivateKey((seed * 1000 + n).to_bytes(32, "big")).public_key.format().hex()
        for n in range(1, count + 1)
    ]


def sample_values() -> dict[str, Any]:
    return {
        "bitcoin.block_hash_stream_endpoints": ["tcp://bitcoin:28332"],
        "bitcoin.rpc_endpoints": ["http://btc:rpc-secret-pw@bitcoin:8332"],
        "bitcoin.chain_tip_polling_interval": 5,
        "bitcoin.timeout": 10,
        "bitcoin.fallback_fee": 10,
        "blocklist_client.endpoint": "http://blocklist-client:3032",
        "blocklist_client.retry_delay": 1000,
        "emily.endpoints": ["https://emily-key@sbtc-emily.com"],
        "emily.pagination_timeout": 10,
        "emily.timeout": 10,
        "signer.bitcoin_presign_request_max_duration": 30,
        "signer.bitcoin_processing_delay": 30,
        "signer.bootstrap_signatures_required": 3,
        "signer.bootstrap_signing_set": signer_keys(4),
        "signer.bootstrap_aggregate_key": signer_keys(1, seed=9)[0],
        "signer.context_window": 1000,
        "signer.db_endpoint": "postgresql://signer:db-secret-pw@postgres:5432/signer",
        "signer.deployer": MAINNET_DEPLOYER,
        "signer.deposit_decisions_retry_window": 3,
        "signer.dkg_begin_pause": 10,
        "signer.dkg_max_duration": 120,
        "signer.dkg_min_bitcoin_block_height": 880088,
        "signer.dkg_target_rounds": 1,
        "signer.dkg_verification_window": 10,
        "signer.event_observer.bind": "0.0.0.0:8801",
        "signer.max_deposits_per_bitcoin_tx": 25,
        "signer.network": "mainnet",
        "signer.p2p.enable_mdns": False,
        "signer.p2p.listen_on": ["tcp://0.0.0.0:4122"],
        "signer.p2p.public_endpoints": [],
        "signer.p2p.seeds": ["tcp://203.0.113.7:4122"],
        "signer.private_key": PRIVATE_KEY,
        "signer.prometheus_exporter_endpoint": "0.0.0.0:9184",
        "signer.requests_processing_delay": 15,
        "signer.sbtc_bitcoin_start_height": 870000,
        "signer.signer_round_max_duration": 30,
        "signer.stacks_fees_max_ustx": 1500000,
        "signer.withdrawal_decisions_retry_window": 3,
        "stacks.endpoints": ["http://stacks-core:20443"],
    }


# Keys operators normally leave out (optional, and some change behaviour when set).
OPTIONAL_LEFT_OUT = ("signer.dkg_min_bitcoin_block_height", "bitcoin.fallback_fee")


def config_for(
    version: str,
    *,
    drop: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A nested config document with every key `version` reads, minus `drop`, plus `extra`."""
    values = sample_values()
    keys = set(load().keys_at(version)) - set(OPTIONAL_LEFT_OUT) - set(drop)
    flat = {key: values[key] for key in sorted(keys)}
    flat.update(extra or {})
    doc: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, name = key.split(".")
        node = doc
        for table in tables:
            node = node.setdefault(table, {})
        node[name] = value
    return doc


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    """Plain values first, then sub-tables, as TOML wants."""
    lines = [f"{k} = {_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for name, value in doc.items():
        if isinstance(value, Mapping):
            path = f"{prefix}{name}"
            text += f"\n[{path}]\n" + to_toml(value, f"{path}.")
    return text
