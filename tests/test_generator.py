"""The realistic signer database generator, on a real PostgreSQL source server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from coincurve import PublicKey
from cryptography.exceptions import InvalidTag

from sbtc_ops.devtools.signer_db import (
    MIGRATIONS,
    SHARES_MAGIC,
    GeneratedDb,
    decrypt_shares,
    generate,
    row_counts,
)
from sbtc_ops.errors import UsageError
from sbtc_ops.signer.knowledge import load
from tests.support.pg import (
    SourceServer,
    new_signer_database,
)

pytestmark = pytest.mark.postgres

# The best-practice page's query.
NEWEST_VERIFIED = (
    "SELECT aggregate_key FROM sbtc_signer.dkg_shares WHERE dkg_shares_status = 'verified'"
    " ORDER BY created_at DESC"
)


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(statement.encode()).fetchall()


def test_dkg_shares_hold_real_keys_with_mixed_statuses(signer_db: tuple[str, GeneratedDb]) -> None:
    url, facts = signer_db
    rows = query(
        url,
        "SELECT aggregate_key, tweaked_aggregate_key, script_pubkey, dkg_shares_status::text,"
        " created_at, signer_set_public_keys, signature_share_threshold,"
        " length(encrypted_private_shares), length(public_shares)"
        " FROM sbtc_signer.dkg_shares ORDER BY created_at",
    )
    assert len(rows) == len(facts.keys) == 6
    statuses = [row[3] for row in rows]
    assert statuses.count("verified") >= 2 and {"failed", "unverified"} <= set(statuses)
    for row, key in zip(rows, facts.keys, strict=True):
        aggregate, tweaked, script = (bytes(v) for v in row[:3])
        assert aggregate == key.aggregate_key and len(aggregate) == 33
        PublicKey(aggregate)  # a valid compressed secp256k1 point
        PublicKey(tweaked)
        assert script == b"\x51\x20" + tweaked[1:]
        assert (row[3], row[4], row[6]) == (key.status, key.created_at, key.threshold)
        assert [bytes(k) for k in row[5]] == list(key.signer_set_public_keys)
        assert 2_000 <= row[7] <= 8_000 and 2_000 <= row[8] <= 8_000
    verified_times = [row[4] for row in rows if row[3] == "verified"]
    assert len(set(verified_times)) == len(verified_times)
    # The newest row is unverified: the newest *verified* key is another one.
    assert bytes(query(url, NEWEST_VERIFIED)[0][0]) == facts.newest_verified_key
    assert facts.newest_verified_key != facts.keys[-1].aggregate_key
    assert facts.signer_public_key in facts.newest_verified.signer_set_public_keys


def test_encrypted_shares_decrypt_only_with_the_signer_key(
    signer_db: tuple[str, GeneratedDb],
) -> None:
    url, facts = signer_db
    for aggregate, blob in query(
        url, "SELECT aggregate_key, encrypted_private_shares FROM sbtc_signer.dkg_shares"
    ):
        plaintext = decrypt_shares(facts.signer_private_key, bytes(blob))
        assert plaintext.startswith(SHARES_MAGIC + bytes(aggregate))
        wrong = bytes(b ^ 1 for b in facts.signer_private_key)
        with pytest.raises(InvalidTag):
            decrypt_shares(wrong, bytes(blob))


def test_counts_migrations_and_references_hold(signer_db: tuple[str, GeneratedDb]) -> None:
    url, facts = signer_db
    with psycopg.connect(url) as conn:
        assert row_counts(conn) == facts.row_counts
    counts = facts.row_counts
    assert counts["bitcoin_blocks"] == facts.units
    assert counts["stacks_blocks"] == 6 * facts.units
    assert counts["deposit_signers"] == 15 * counts["deposit_requests"]
    assert counts["public.__sbtc_migrations"] == len(MIGRATIONS)
    applied = [row[0] for row in query(url, "SELECT key FROM public.__sbtc_migrations ORDER BY 1")]
    assert applied == list(MIGRATIONS) == facts.migrations
    assert "0022__add_is_canonical_to_bitcoin_blocks.sql" in applied
    foreign_keys = query(
        url,
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = 'sbtc_signer' AND c.contype = 'f'",
    )
    assert foreign_keys[0][0] >= 4
    # References the real schema leaves unenforced must hold too.
    dangling = {
        "stacks anchor": "SELECT count(*) FROM sbtc_signer.stacks_blocks s WHERE NOT EXISTS"
        " (SELECT 1 FROM sbtc_signer.bitcoin_blocks b WHERE b.block_hash = s.bitcoin_anchor)",
        "dkg start block": "SELECT count(*) FROM sbtc_signer.dkg_shares d WHERE NOT EXISTS"
        " (SELECT 1 FROM sbtc_signer.bitcoin_blocks b"
        "  WHERE b.block_hash = d.started_at_bitcoin_block_hash"
        "  AND b.block_height = d.started_at_bitcoin_block_height)",
        "deposit signers key": "SELECT count(*) FROM sbtc_signer.deposit_requests r WHERE NOT"
        " EXISTS (SELECT 1 FROM sbtc_signer.dkg_shares d"
        "  WHERE substr(d.aggregate_key, 2) = r.signers_public_key)",
        "withdrawal tx output": "SELECT count(*) FROM sbtc_signer.bitcoin_withdrawal_tx_outputs o"
        " WHERE NOT EXISTS (SELECT 1 FROM sbtc_signer.withdrawal_requests w"
        "  WHERE w.request_id = o.request_id)",
        "rotation block": "SELECT count(*) FROM sbtc_signer.rotate_keys_transactions t"
        " WHERE NOT EXISTS (SELECT 1 FROM sbtc_signer.stacks_blocks s"
        "  WHERE s.block_hash = t.block_hash)",
        "withdrawal output": "SELECT count(*) FROM sbtc_signer.bitcoin_withdrawals_outputs o"
        " WHERE NOT EXISTS (SELECT 1 FROM sbtc_signer.withdrawal_requests w"
        "  WHERE w.request_id = o.request_id AND w.block_hash = o.stacks_block_hash)",
    }
    for name, statement in dangling.items():
        assert query(url, statement) == [(0,)], name
    # Deposits are locked to the verified key in force when they were made.
    used = {
        bytes(row[0])
        for row in query(
            url, "SELECT DISTINCT signers_public_key FROM sbtc_signer.deposit_requests"
        )
    }
    assert used == {k.aggregate_key[1:] for k in facts.keys if k.status == "verified"}


def test_same_seed_same_data_other_seed_other_keys(source_server: SourceServer) -> None:
    fingerprint = (
        "SELECT md5(string_agg(block_hash::text || parent_hash::text, ',' ORDER BY block_height))"
        " FROM sbtc_signer.bitcoin_blocks"
    )
    first_url, first = new_signer_database(source_server, target_mb=1, seed=7)
    second_url, second = new_signer_database(source_server, target_mb=1, seed=7)
    _, other = new_signer_database(source_server, target_mb=1, seed=8)
    assert first.keys == second.keys and first.signer_private_key == second.signer_private_key
    assert first.row_counts == second.row_counts
    assert query(first_url, fingerprint) == query(second_url, fingerprint)
    shares = "SELECT encrypted_private_shares FROM sbtc_signer.dkg_shares ORDER BY created_at"
    assert query(first_url, shares) == query(second_url, shares)
    assert {k.aggregate_key for k in other.keys}.isdisjoint(k.aggregate_key for k in first.keys)


def test_size_follows_the_target(source_server: SourceServer) -> None:
    _, small = new_signer_database(source_server, target_mb=2, seed=3)
    _, large = new_signer_database(source_server, target_mb=12, seed=3)
    for facts, target_mb in ((small, 2), (large, 12)):
        assert 0.7 < facts.schema_bytes / (target_mb * 2**20) < 1.4, (target_mb, facts.schema_bytes)
    assert large.units > 5 * small.units


def test_existing_schema_is_refused_unless_replaced(source_server: SourceServer) -> None:
    url, first = new_signer_database(source_server, target_mb=1, seed=5)
    with pytest.raises(UsageError, match="already has a sbtc_signer schema"):
        generate(url, target_mb=1, seed=5)
    again = generate(url, target_mb=1, seed=5, replace=True)
    assert again.row_counts == first.row_counts
    with pytest.raises(UsageError, match="positive"):
        generate(url, target_mb=0, seed=5, replace=True)


def test_command_line_entry_writes_facts_and_a_private_key_file(
    source_server: SourceServer,
    tmp_path: Path,
) -> None:
    url = source_server.create_signer_database("signer_cli")
    key_file = tmp_path / "signer.key"
    command = [sys.executable, "-m", "sbtc_ops.devtools.signer_db", "--size-mb", "1", "--seed", "4"]
    done = subprocess.run(
        [*command, "--key-out", str(key_file)],
        env={**os.environ, "SBTC_OPS_GENERATOR_DB_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["row_counts"]["dkg_shares"] == 6
    assert len(bytes.fromhex(facts["newest_verified_key"])) == 33
    private_key = key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert private_key not in done.stdout + done.stderr
    assert source_server.signer_password not in done.stdout + done.stderr


def test_migrations_are_the_newest_releases_real_list() -> None:
    knowledge = load()
    newest = knowledge.newest_release.version
    assert knowledge.migrations_at(newest) == MIGRATIONS
    assert len(MIGRATIONS) == 21 and "0002" not in " ".join(MIGRATIONS)


def test_the_signers_functions_walk_the_generated_chains(
    signer_db: tuple[str, GeneratedDb],
) -> None:
    """Our own bodies of the signer's four functions give what the signer relies on."""
    url, facts = signer_db
    with psycopg.connect(url) as conn:
        tip, height = conn.execute(
            "SELECT block_hash, block_height FROM sbtc_signer.bitcoin_blocks"
            " ORDER BY block_height DESC LIMIT 1"
        ).fetchone() or (None, None)
        walked = conn.execute(
            "SELECT block_height FROM sbtc_signer.bitcoin_blockchain_of(%s, 5)", (tip,)
        ).fetchall()
        assert [r[0] for r in walked] == [height - i for i in range(5)]
        until = conn.execute(
            "SELECT min(block_height), count(*) FROM sbtc_signer.bitcoin_blockchain_until(%s, %s)",
            (tip, height - 3),
        ).fetchone()
        assert until == (height - 3, 4)
        stacks_tip = conn.execute(
            "SELECT block_hash FROM sbtc_signer.stacks_blocks ORDER BY block_height DESC LIMIT 1"
        ).fetchone()
        assert stacks_tip is not None
        stacks = conn.execute(
            "SELECT count(*) FROM sbtc_signer.stacks_blockchain_of(%s, %s, 2)",
            (stacks_tip[0], tip),
        ).fetchone()
        assert stacks == (12,)  # the stacks blocks anchored in the two newest bitcoin blocks
        reversed_ = conn.execute(
            "SELECT sbtc_signer.reverse_bytea('\\x010203'::bytea), sbtc_signer.reverse_bytea(NULL)"
        ).fetchone()
        assert reversed_ == (b"\x03\x02\x01", None)
    assert facts.migrations == list(MIGRATIONS)
