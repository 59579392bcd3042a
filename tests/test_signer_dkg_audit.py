"""audit dkg (DKG-…): DKG rows of a real signer database in each status and age, judged
against a bitcoind stand-in's height and a registry stand-in's aggregate key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sbtc_ops.audit.framework import Finding
from sbtc_ops.devtools.signer_db import GeneratedDb
from tests.fakes.bitcoind import FakeBitcoind
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.audit2 import NOW, make_settings, run_area, write
from tests.support.pg import SourceServer, new_signer_database
from tests.support.signer_configs import config_for, to_toml

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def dkg_db(source_server: SourceServer) -> tuple[str, GeneratedDb]:
    return new_signer_database(source_server, target_mb=0.5, seed=11)


@pytest.fixture
def chain() -> Iterator[tuple[FakeBitcoind, FakeStacksNode]]:
    with FakeBitcoind() as bitcoind, FakeStacksNode() as node:
        yield bitcoind, node


def set_newest(url: str, status: str, started_height: int, age: timedelta) -> str:
    """Make the newest row have this status, start height and age; returns its key (hex)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT aggregate_key FROM sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE sbtc_signer.dkg_shares SET dkg_shares_status = %s, "
            "started_at_bitcoin_block_height = %s, created_at = %s WHERE aggregate_key = %s",
            (status, started_height, NOW - age, row[0]),
        )
        return bytes(row[0]).hex()


def verified_keys(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares "
            "WHERE dkg_shares_status = 'verified' ORDER BY created_at DESC"
        ).fetchall()
    return [str(r[0]) for r in rows]


def audit_dkg(
    tmp_path: Path,
    url: str,
    bitcoind: FakeBitcoind,
    node: FakeStacksNode,
    window: int | None = None,
) -> dict[str, Finding]:
    extra: dict[str, Any] = {} if window is None else {"signer.dkg_verification_window": window}
    config = write(
        tmp_path, "/signer/signer-config.toml", to_toml(config_for("1.3.3", extra=extra))
    )
    settings = make_settings(
        tmp_path,
        db={"url": url},
        signer={"config_path": str(config)},
        stacks={"endpoints": [node.url], "retries": 0},
        audit={"bitcoin_rpc_url": bitcoind.rpc_url(), "stacks_node_url": node.url},
    )
    return run_area("dkg", settings, root=Path("/"))


@pytest.mark.parametrize(
    ("status", "blocks_ago", "window", "expected"),
    [
        ("verified", 500, None, {"DKG-001": "pass", "DKG-002": "pass"}),
        ("unverified", 4, None, {"DKG-001": "warn", "DKG-002": "warn"}),
        ("unverified", 11, None, {"DKG-001": "warn", "DKG-002": "fail"}),
        ("unverified", 11, 20, {"DKG-001": "warn", "DKG-002": "warn"}),
        ("failed", 30, None, {"DKG-001": "fail", "DKG-002": "pass"}),
    ],
)
def test_newest_row_status_and_age_against_the_bitcoin_tip(
    tmp_path: Path,
    dkg_db: tuple[str, GeneratedDb],
    chain: tuple[FakeBitcoind, FakeStacksNode],
    status: str,
    blocks_ago: int,
    window: int | None,
    expected: dict[str, str],
) -> None:
    url, _ = dkg_db
    bitcoind, node = chain
    tip = 880_000
    bitcoind.blockchain["blocks"] = tip
    set_newest(url, status, tip - blocks_ago, timedelta(minutes=10 * blocks_ago))
    found = audit_dkg(tmp_path, url, bitcoind, node, window)
    assert {i: found[i].status.value for i in expected} == expected
    assert status in found["DKG-001"].detail
    if status == "unverified":
        assert found["DKG-002"].data["blocks_unverified"] == blocks_ago
        assert found["DKG-002"].data["window"] == (window or 10)


def test_newest_verified_key_against_the_registry(
    tmp_path: Path, dkg_db: tuple[str, GeneratedDb], chain: tuple[FakeBitcoind, FakeStacksNode]
) -> None:
    url, _ = dkg_db
    bitcoind, node = chain
    set_newest(url, "verified", 879_000, timedelta(days=3))
    newest, older = verified_keys(url)[:2]

    node.set_aggregate_key(bytes.fromhex(newest))
    assert audit_dkg(tmp_path, url, bitcoind, node)["DKG-003"].status.value == "pass"

    node.set_aggregate_key(bytes.fromhex(older))
    pending = audit_dkg(tmp_path, url, bitcoind, node)["DKG-003"]
    assert pending.status.value == "warn"
    assert "rotate-keys transaction is pending" in pending.detail

    missing = "03" + "ab" * 32
    node.set_aggregate_key(bytes.fromhex(missing))
    lost = audit_dkg(tmp_path, url, bitcoind, node)["DKG-003"]
    assert lost.status.value == "fail"
    assert f"{missing} is not among this signer's shares" in lost.detail

    node.set_aggregate_key(None)
    assert audit_dkg(tmp_path, url, bitcoind, node)["DKG-003"].status.value == "warn"


def test_no_database_configured_skips_and_an_empty_table_warns(
    tmp_path: Path, source_server: SourceServer, chain: tuple[FakeBitcoind, FakeStacksNode]
) -> None:
    bitcoind, node = chain
    url, _ = new_signer_database(source_server, target_mb=0.5, seed=12)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM sbtc_signer.dkg_shares")
    found = audit_dkg(tmp_path, url, bitcoind, node)
    assert found["DKG-001"].status.value == "warn"
    assert "no DKG shares yet" in found["DKG-001"].detail
    settings = make_settings(tmp_path, audit={"bitcoin_rpc_url": bitcoind.rpc_url()})
    skipped = run_area("dkg", settings, root=Path("/"))
    assert skipped["DKG-001"].status.value == "skip"
    assert "signer database not configured" in skipped["DKG-001"].detail
