"""A generator of realistic sBTC signer databases, for tests and benchmarks.

The schema is the shape the signer's migrations leave at the newest release's level
(signer_schema.sql beside this file: our own DDL, with our own function bodies, so its
canonical digest is deliberately not one of signer/schema_digests.toml's). The data is deterministic for a seed and scales with a target size:

- `dkg_shares` holds six DKG rounds with real secp256k1 keys (aggregate key, its BIP-341
  tweaked key and P2TR script), statuses mixed (three `verified` at different times, two
  `failed`, the newest row `unverified`), and encrypted private shares that are real
  AES-256-GCM ciphertexts (12-byte nonce first) under the signer's private key, so the
  `dkg.shares_decrypt` check of verify can be exercised;
- the bulk tables (blocks, deposits, withdrawals, their signer votes, bitcoin inputs,
  outputs and sighashes, events) are filled server-side with INSERT … SELECT over
  generate_series, every value derived from sha256(seed:label:n), so 1 GB takes about a
  minute and a given seed gives the same rows in any batch order;
- `public.__sbtc_migrations` lists the migration files a real signer has applied.

Usage: `generate(url_or_conn, target_mb=3, seed=1)` → GeneratedDb (the facts tests compare
with), or `python -m sbtc_ops.devtools.signer_db --url URL --size-mb 1024`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from coincurve import PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from sbtc_ops.errors import UsageError
from sbtc_ops.files import PRIVATE_FILE_MODE

SCHEMA = "sbtc_signer"
Progress = Callable[[int, int], None]
MAINNET_DEPLOYER = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# The migration files of stacks-sbtc/sbtc signer/migrations/ whose result signer_schema.sql
# describes: releases v1.3.0 to v1.3.3 (there is no 0002). tests/test_generator.py keeps this
# equal to the newest release's list in signer/releases.toml.
MIGRATIONS: tuple[str, ...] = (
    "0001__create_schema.sql",
    "0003__create_tables.sql",
    "0004__create_functions.sql",
    "0005__create_sighashes_and_withdrawal_outputs_tables.sql",
    "0006__fix_stacks_event_block_hashes.sql",
    "0007__create_bitcoin_blockchain_from.sql",
    "0008__create_indices_bitcoin_tx_tables.sql",
    "0009__drop_sweep_tables.sql",
    "0010__add_bitcoin_tx_related_indices.sql",
    "0011__add_aggregate_key_sighashes_table.sql",
    "0012__dkg_verification_extensions.sql",
    "0013__consolidate_withdrawal_tables.sql",
    "0014__add_bitcoin_tx_outputs_.sql",
    "0015__drop_transactions_tx_column.sql",
    "0016__modify_rotate_keys_transactions_table.sql",
    "0017__remove_stacks_transactions_table.sql",
    "0018__store_reclaim_script_hash.sql",
    "0019__p2p_peers.sql",
    "0020__drop_reclaim_script_column.sql",
    "0021__alter_max_fee_column.sql",
    "0022__add_is_canonical_to_bitcoin_blocks.sql",
)

SIGNER_COUNT = 15
THRESHOLD = 11
STACKS_BLOCKS_PER_BITCOIN_BLOCK = 6
FIRST_BITCOIN_HEIGHT = 880_000
FIRST_STACKS_HEIGHT = 1_200_000
CHAIN_START = datetime(2025, 3, 1, tzinfo=UTC)
BITCOIN_BLOCK_INTERVAL = timedelta(minutes=10)
MIN_UNITS = 40
BATCH_UNITS = 20_000
# Measured on PostgreSQL 18: bytes of table, TOAST and index data per unit (one bitcoin
# block with its stacks blocks, deposit, withdrawal, votes and bitcoin transactions), and
# the size of the schema with no bulk data.
BYTES_PER_UNIT = 15_400
FIXED_BYTES = 1_000_000

# (position along the chain, status) of each DKG round, oldest first. The newest row is
# unverified, so "newest verified" and "newest" differ, as after a fresh DKG round.
DKG_ROUNDS: tuple[tuple[float, str], ...] = (
    (0.05, "verified"),
    (0.25, "failed"),
    (0.45, "verified"),
    (0.70, "verified"),
    (0.85, "failed"),
    (0.95, "unverified"),
)
SHARES_MAGIC = b"sbtc-ops/test-dkg-private-shares/v1\x00"


@dataclass(frozen=True)
class DkgKey:
    """One generated dkg_shares row, as tests need to know it."""

    aggregate_key: bytes
    tweaked_aggregate_key: bytes
    script_pubkey: bytes
    status: str
    created_at: datetime
    signer_set_public_keys: tuple[bytes, ...]
    threshold: int
    started_at_bitcoin_block_hash: bytes
    started_at_bitcoin_block_height: int


@dataclass
class GeneratedDb:
    """What was generated: the facts a backup manifest or a verify run must agree with."""

    seed: int
    units: int
    row_counts: dict[str, int]  # table name in sbtc_signer → rows (plus public.__sbtc_migrations)
    keys: list[DkgKey]  # oldest first
    newest_verified_key: bytes
    signer_private_key: bytes  # the AES-256-GCM key of encrypted_private_shares (test key)
    signer_public_key: bytes
    migrations: list[str]
    schema_bytes: int
    seconds: float
    deployer: str = MAINNET_DEPLOYER
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def newest_verified(self) -> DkgKey:
        return next(k for k in self.keys if k.aggregate_key == self.newest_verified_key)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description without the private key."""
        doc = asdict(self)
        doc.pop("signer_private_key")
        doc["keys"] = [
            {
                "aggregate_key": k.aggregate_key.hex(),
                "status": k.status,
                "created_at": k.created_at.isoformat(),
                "threshold": k.threshold,
            }
            for k in self.keys
        ]
        doc["newest_verified_key"] = self.newest_verified_key.hex()
        doc["signer_public_key"] = self.signer_public_key.hex()
        return doc


# -- deterministic values -------------------------------------------------------------------


def hash_value(seed: int, label: str, n: int | str) -> bytes:
    """sha256("seed:label:n"): the same as the SQL expression the bulk inserts use."""
    return hashlib.sha256(f"{seed}:{label}:{n}".encode()).digest()


def _stream(seed: int, label: str, length: int) -> bytes:
    chunks = (hash_value(seed, label, i) for i in range((length + 31) // 32))
    return b"".join(chunks)[:length]


def _private_key(seed: int, label: str, n: int | str) -> PrivateKey:
    for attempt in range(100):
        candidate = hash_value(seed, f"{label}/{attempt}", n)
        if 0 < int.from_bytes(candidate, "big") < SECP256K1_ORDER:
            return PrivateKey(candidate)
    raise AssertionError("no valid secp256k1 key in 100 hashes")  # pragma: no cover


def _tagged_hash(tag: str, data: bytes) -> bytes:
    tag_hash = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(tag_hash + tag_hash + data).digest()


def taproot_tweak(aggregate: PrivateKey) -> tuple[bytes, bytes]:
    """(tweaked compressed key, P2TR scriptPubKey) for a key-path-only output (BIP-341)."""
    secret = int.from_bytes(aggregate.secret, "big")
    public = aggregate.public_key.format(compressed=True)
    if public[0] == 0x03:  # BIP-340 uses the even-y point
        secret = SECP256K1_ORDER - secret
    tweak = int.from_bytes(_tagged_hash("TapTweak", public[1:]), "big")
    tweaked = PrivateKey(((secret + tweak) % SECP256K1_ORDER).to_bytes(32, "big"))
    tweaked_public = tweaked.public_key.format(compressed=True)
    return tweaked_public, b"\x51\x20" + tweaked_public[1:]


def encrypt_shares(signer_private_key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """The signer's format: 12-byte nonce, then AES-256-GCM ciphertext and tag."""
    return nonce + AESGCM(signer_private_key).encrypt(nonce, plaintext, None)


def decrypt_shares(signer_private_key: bytes, blob: bytes) -> bytes:
    return AESGCM(signer_private_key).decrypt(blob[:12], blob[12:], None)


def _private_shares_plaintext(seed: int, round_index: int, aggregate_key: bytes) -> bytes:
    """About 3 KB standing in for the signer's serialized share state of one DKG round."""
    parts = [SHARES_MAGIC, aggregate_key, struct.pack(">I", SIGNER_COUNT)]
    for party in range(SIGNER_COUNT):
        parts.append(struct.pack(">I", party + 1))
        parts.append(_stream(seed, f"share/{round_index}/{party}", 6 * 32))
    return b"".join(parts)


# -- the plan: keys and the small tables ------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    seed: int
    units: int
    signer_keys: tuple[PrivateKey, ...]
    rounds: tuple[tuple[DkgKey, bytes, bytes], ...]  # (key, encrypted shares, public shares)

    @property
    def signer_public_keys(self) -> tuple[bytes, ...]:
        return tuple(k.public_key.format(compressed=True) for k in self.signer_keys)


def _unit_time(unit: int) -> datetime:
    return CHAIN_START + unit * BITCOIN_BLOCK_INTERVAL


def _plan(seed: int, units: int, signer_private_key: bytes | None) -> _Plan:
    own = PrivateKey(signer_private_key) if signer_private_key else _private_key(seed, "signer", 0)
    signers = (own, *(_private_key(seed, "signer", i) for i in range(1, SIGNER_COUNT + 1)))
    current_set = tuple(k.public_key.format(compressed=True) for k in signers[:SIGNER_COUNT])
    # The first round had one signer who was later replaced.
    first_set = (*current_set[: SIGNER_COUNT - 1], signers[SIGNER_COUNT].public_key.format())
    rounds = []
    for index, (position, status) in enumerate(DKG_ROUNDS):
        aggregate = _private_key(seed, "aggregate", index)
        aggregate_key = aggregate.public_key.format(compressed=True)
        tweaked, script_pubkey = taproot_tweak(aggregate)
        unit = int(position * (units - 1))
        key = DkgKey(
            aggregate_key=aggregate_key,
            tweaked_aggregate_key=tweaked,
            script_pubkey=script_pubkey,
            status=status,
            created_at=_unit_time(unit) + timedelta(minutes=3, seconds=index),
            signer_set_public_keys=first_set if index == 0 else current_set,
            threshold=THRESHOLD,
            started_at_bitcoin_block_hash=hash_value(seed, "btc", unit),
            started_at_bitcoin_block_height=FIRST_BITCOIN_HEIGHT + unit,
        )
        nonce = hash_value(seed, "nonce", index)[:12]
        plaintext = _private_shares_plaintext(seed, index, aggregate_key)
        encrypted = encrypt_shares(own.secret, nonce, plaintext)
        public_shares = _stream(seed, f"public-shares/{index}", SIGNER_COUNT * (4 + THRESHOLD * 33))
        rounds.append((key, encrypted, public_shares))
    return _Plan(seed, units, signers, tuple(rounds))


def _newest_verified(plan: _Plan) -> DkgKey:
    verified = [key for key, _, _ in plan.rounds if key.status == "verified"]
    return max(verified, key=lambda k: k.created_at)


# -- SQL ---------------------------------------------------------------------------------------


def _h(label: str, expr: str) -> str:
    """SQL for sha256('seed:label:<expr>'), matching hash_value()."""
    return f"sha256(convert_to(%(seed)s || ':{label}:' || ({expr})::text, 'UTF8'))"


_S = STACKS_BLOCKS_PER_BITCOIN_BLOCK
_UNITS = "generate_series(%(lo)s::bigint, %(hi)s::bigint) AS u"
_VOTERS = f"generate_series(0, {SIGNER_COUNT - 1}) AS s"
_TIME = "(%(start)s::timestamptz + u * interval '10 minutes')"
# The verified key in force at unit u: deposits, sighashes and the signers' UTXO use the
# aggregate key of the newest verified DKG round started before them.
_ACTIVE = "1 + (u >= %(rotation1)s)::int + (u >= %(rotation2)s)::int"
_SIGNER_XONLY = f"(%(key_sets)s::bytea[])[{_ACTIVE}]"
_SIGNERS_SCRIPT = f"(%(scripts)s::bytea[])[{_ACTIVE}]"

# Each statement fills one table for the units lo..hi; together they keep every reference
# (block hashes, request ids, txids) pointing at rows that exist.
BULK_INSERTS: tuple[tuple[str, str], ...] = (
    (
        "bitcoin_blocks",
        f"""INSERT INTO sbtc_signer.bitcoin_blocks
            (block_hash, block_height, parent_hash, created_at, is_canonical)
        SELECT {_h("btc", "u")}, %(btc0)s + u, {_h("btc", "u - 1")}, {_TIME}, true
        FROM {_UNITS}""",
    ),
    (
        "stacks_blocks",
        f"""INSERT INTO sbtc_signer.stacks_blocks
            (block_hash, block_height, parent_hash, bitcoin_anchor, created_at)
        SELECT {_h("stx", f"u * {_S} + j")}, %(stx0)s + u * {_S} + j,
               {_h("stx", f"u * {_S} + j - 1")}, {_h("btc", "u")},
               {_TIME} + j * interval '{600 // _S} seconds'
        FROM {_UNITS}, generate_series(0, {_S - 1}) AS j""",
    ),
    (
        "bitcoin_transactions",
        f"""INSERT INTO sbtc_signer.bitcoin_transactions (txid, block_hash)
        SELECT {_h("btx", "u * 2 + t")}, {_h("btc", "u")}
        FROM {_UNITS}, generate_series(0, 1) AS t""",
    ),
    (
        "deposit_requests",
        f"""INSERT INTO sbtc_signer.deposit_requests
            (txid, output_index, spend_script, recipient, amount, lock_time, signers_public_key,
             sender_script_pub_keys, created_at, reclaim_script_hash, max_fee)
        SELECT {_h("dtx", "u")}, 0,
               '\\x1e'::bytea || substr({_h("spend", "u")}, 1, 30) || {_h("spend2", "u")}
                   || '\\x7520'::bytea || {_h("spend3", "u")} || '\\xac'::bytea,
               '0x0516' || encode(substr({_h("rcp", "u")}, 1, 20), 'hex'),
               10000 + (u * 7919) %% 99000000, 6000,
               {_SIGNER_XONLY},
               ARRAY['\\x0014'::bytea || substr({_h("snd", "u")}, 1, 20)],
               {_TIME} + interval '1 minute', {_h("rsh", "u")}, int8send(80000::bigint)
        FROM {_UNITS}""",
    ),
    (
        "deposit_signers",
        f"""INSERT INTO sbtc_signer.deposit_signers
            (txid, output_index, signer_pub_key, can_sign, can_accept, created_at)
        SELECT {_h("dtx", "u")}, 0, (%(signers)s::bytea[])[s + 1], true, (u + s) %% 17 <> 0,
               {_TIME} + interval '2 minutes' + s * interval '1 second'
        FROM {_UNITS}, {_VOTERS}""",
    ),
    (
        "withdrawal_requests",
        f"""INSERT INTO sbtc_signer.withdrawal_requests
            (request_id, txid, block_hash, recipient, amount, max_fee, sender_address, created_at,
             bitcoin_block_height)
        SELECT u, {_h("wtx", "u")}, {_h("stx", f"u * {_S}")},
               '\\x0014'::bytea || substr({_h("wrc", "u")}, 1, 20),
               5000 + (u * 104729) %% 50000000, 20000,
               'SP' || upper(substr(encode({_h("wsa", "u")}, 'hex'), 1, 38)),
               {_TIME} + interval '1 minute', %(btc0)s + u
        FROM {_UNITS}""",
    ),
    (
        "withdrawal_signers",
        f"""INSERT INTO sbtc_signer.withdrawal_signers
            (request_id, txid, block_hash, signer_pub_key, is_accepted, created_at)
        SELECT u, {_h("wtx", "u")}, {_h("stx", f"u * {_S}")}, (%(signers)s::bytea[])[s + 1],
               (u + s) %% 13 <> 0, {_TIME} + interval '3 minutes' + s * interval '1 second'
        FROM {_UNITS}, {_VOTERS}""",
    ),
    (
        "bitcoin_tx_sighashes",
        f"""INSERT INTO sbtc_signer.bitcoin_tx_sighashes
            (sighash, txid, chain_tip, prevout_txid, prevout_output_index, prevout_type,
             validation_result, is_valid_tx, will_sign, created_at, x_only_public_key)
        SELECT {_h("sgh", "u * 2 + t")}, {_h("btx", "u * 2")}, {_h("btc", "u")},
               CASE WHEN t = 0 THEN {_h("btx", "u * 2 - 2")} ELSE {_h("dtx", "u")} END, 0,
               (CASE WHEN t = 0 THEN 'signers_input' ELSE 'deposit' END)::sbtc_signer.prevout_type,
               'ok', true, true, {_TIME} + interval '4 minutes', {_SIGNER_XONLY}
        FROM {_UNITS}, generate_series(0, 1) AS t""",
    ),
    (
        "bitcoin_tx_inputs",
        f"""INSERT INTO sbtc_signer.bitcoin_tx_inputs
            (txid, prevout_txid, prevout_output_index, amount, script_pubkey, prevout_type,
             created_at)
        SELECT {_h("btx", "u * 2")},
               CASE WHEN t = 0 THEN {_h("btx", "u * 2 - 2")} ELSE {_h("dtx", "u")} END, 0,
               CASE WHEN t = 0 THEN 1000000000 + u ELSE 10000 + (u * 7919) %% 99000000 END,
               {_SIGNERS_SCRIPT},
               (CASE WHEN t = 0 THEN 'signers_input' ELSE 'deposit' END)::sbtc_signer.prevout_type,
               {_TIME} + interval '5 minutes'
        FROM {_UNITS}, generate_series(0, 1) AS t""",
    ),
    (
        "bitcoin_tx_outputs",
        f"""INSERT INTO sbtc_signer.bitcoin_tx_outputs
            (txid, output_index, amount, script_pubkey, output_type, created_at)
        SELECT {_h("btx", "u * 2")}, t,
               CASE t WHEN 0 THEN 1000000000 + u WHEN 1 THEN 0
                      ELSE 5000 + (u * 104729) %% 50000000 - 1500 END,
               CASE t WHEN 0 THEN {_SIGNERS_SCRIPT}
                      WHEN 1 THEN '\\x6a15'::bytea || substr({_h("opr", "u")}, 1, 21)
                      ELSE '\\x0014'::bytea || substr({_h("wrc", "u")}, 1, 20) END,
               (CASE t WHEN 0 THEN 'signers_output' WHEN 1 THEN 'signers_op_return'
                       ELSE 'withdrawal' END)::sbtc_signer.output_type,
               {_TIME} + interval '5 minutes'
        FROM {_UNITS}, generate_series(0, 2) AS t""",
    ),
    (
        "bitcoin_withdrawal_tx_outputs",
        f"""INSERT INTO sbtc_signer.bitcoin_withdrawal_tx_outputs
            (txid, output_index, request_id, created_at)
        SELECT {_h("btx", "u * 2")}, 2, u, {_TIME} + interval '5 minutes'
        FROM {_UNITS}""",
    ),
    (
        "bitcoin_withdrawals_outputs",
        f"""INSERT INTO sbtc_signer.bitcoin_withdrawals_outputs
            (bitcoin_txid, bitcoin_chain_tip, output_index, request_id, stacks_txid,
             stacks_block_hash, validation_result, is_valid_tx, created_at)
        SELECT {_h("btx", "u * 2")}, {_h("btc", "u")}, 2, u, {_h("wtx", "u")},
               {_h("stx", f"u * {_S}")}, 'ok', true, {_TIME} + interval '6 minutes'
        FROM {_UNITS}""",
    ),
    (
        "completed_deposit_events",
        f"""INSERT INTO sbtc_signer.completed_deposit_events
            (txid, block_hash, amount, bitcoin_txid, output_index, sweep_block_hash,
             sweep_block_height, sweep_txid, created_at)
        SELECT {_h("cde", "u")}, {_h("stx", f"u * {_S} + 1")}, 10000 + (u * 7919) %% 99000000,
               {_h("dtx", "u")}, 0, {_h("btc", "u")}, %(btc0)s + u, {_h("btx", "u * 2")},
               {_TIME} + interval '7 minutes'
        FROM {_UNITS}""",
    ),
    (
        "withdrawal_accept_events",
        f"""INSERT INTO sbtc_signer.withdrawal_accept_events
            (txid, block_hash, request_id, signer_bitmap, bitcoin_txid, output_index, fee,
             sweep_block_hash, sweep_block_height, sweep_txid, created_at)
        SELECT {_h("wae", "u")}, {_h("stx", f"u * {_S} + 2")}, u,
               substr({_h("bitmap", "u")}, 1, 16), {_h("btx", "u * 2")}, 2, 1500 + u %% 700,
               {_h("btc", "u")}, %(btc0)s + u, {_h("btx", "u * 2")},
               {_TIME} + interval '8 minutes'
        FROM {_UNITS} WHERE u %% 10 <> 3""",
    ),
    (
        "withdrawal_reject_events",
        f"""INSERT INTO sbtc_signer.withdrawal_reject_events
            (txid, block_hash, request_id, signer_bitmap, created_at)
        SELECT {_h("wre", "u")}, {_h("stx", f"u * {_S} + 3")}, u,
               substr({_h("bitmap", "u")}, 1, 16), {_TIME} + interval '8 minutes'
        FROM {_UNITS} WHERE u %% 10 = 3""",
    ),
)


def schema_sql() -> str:
    return resources.files("sbtc_ops.devtools").joinpath("signer_schema.sql").read_text()


def create_schema(conn: psycopg.Connection[Any], migrations: tuple[str, ...] = MIGRATIONS) -> None:
    """Create the signer schema (empty tables) and record the applied migrations."""
    conn.execute(schema_sql().encode())
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.__sbtc_migrations (key) VALUES (%s)", [(m,) for m in migrations]
        )


def drop_schema(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP SCHEMA IF EXISTS sbtc_signer CASCADE")
    conn.execute("DROP TABLE IF EXISTS public.__sbtc_migrations")


def units_for(target_mb: float) -> int:
    wanted = target_mb * 1024 * 1024 - FIXED_BYTES
    return max(MIN_UNITS, round(wanted / BYTES_PER_UNIT))


def generate(
    target: str | psycopg.Connection[Any],
    target_mb: float = 3.0,
    seed: int = 1,
    *,
    signer_private_key: bytes | None = None,
    replace: bool = False,
    deployer: str = MAINNET_DEPLOYER,
    progress: Progress | None = None,
) -> GeneratedDb:
    """Fill a database with a realistic signer schema of about `target_mb` MB (tables,
    TOAST and indexes of sbtc_signer). Refuses a database that already has the schema
    unless `replace`. `progress(done_units, total_units)` is called after each batch."""
    if target_mb <= 0:
        raise UsageError(f"target size must be positive, not {target_mb}")
    started = time.monotonic()
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            return _generate(
                conn, target_mb, seed, signer_private_key, replace, deployer, progress, started
            )
    if not target.autocommit:
        raise UsageError("generate() needs a connection in autocommit mode")
    return _generate(
        target, target_mb, seed, signer_private_key, replace, deployer, progress, started
    )


def _generate(
    conn: psycopg.Connection[Any],
    target_mb: float,
    seed: int,
    signer_private_key: bytes | None,
    replace: bool,
    deployer: str,
    progress: Progress | None,
    started: float,
) -> GeneratedDb:
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone()
    if exists and not replace:
        raise UsageError("the database already has a sbtc_signer schema (use replace=True)")
    conn.execute("SET synchronous_commit = off")
    if exists:
        drop_schema(conn)
    units = units_for(target_mb)
    plan = _plan(seed, units, signer_private_key)
    newest = _newest_verified(plan)
    create_schema(conn)
    _insert_bulk(conn, plan, progress)
    _insert_small_tables(conn, plan, deployer)
    conn.execute("ANALYZE")
    conn.execute("RESET synchronous_commit")
    own = plan.signer_keys[0]
    return GeneratedDb(
        seed=seed,
        units=units,
        row_counts=row_counts(conn),
        keys=[key for key, _, _ in plan.rounds],
        newest_verified_key=newest.aggregate_key,
        signer_private_key=own.secret,
        signer_public_key=own.public_key.format(compressed=True),
        migrations=list(MIGRATIONS),
        schema_bytes=schema_bytes(conn),
        seconds=time.monotonic() - started,
        deployer=deployer,
    )


def _insert_bulk(conn: psycopg.Connection[Any], plan: _Plan, progress: Progress | None) -> None:
    verified = [key for key, _, _ in plan.rounds if key.status == "verified"]
    assert len(verified) == 3, "the bulk statements expect three verified rounds"
    params: dict[str, Any] = {
        "seed": str(plan.seed),
        "start": CHAIN_START,
        "btc0": FIRST_BITCOIN_HEIGHT,
        "stx0": FIRST_STACKS_HEIGHT,
        "signers": list(plan.signer_public_keys[:SIGNER_COUNT]),
        "key_sets": [key.aggregate_key[1:] for key in verified],
        "scripts": [key.script_pubkey for key in verified],
        "rotation1": verified[1].started_at_bitcoin_block_height - FIRST_BITCOIN_HEIGHT,
        "rotation2": verified[2].started_at_bitcoin_block_height - FIRST_BITCOIN_HEIGHT,
    }
    for lo in range(0, plan.units, BATCH_UNITS):
        params["lo"], params["hi"] = lo, min(lo + BATCH_UNITS, plan.units) - 1
        with conn.transaction():
            for _, statement in BULK_INSERTS:
                conn.execute(statement.encode(), params)
        if progress is not None:
            progress(params["hi"] + 1, plan.units)


def _insert_small_tables(conn: psycopg.Connection[Any], plan: _Plan, deployer: str) -> None:
    with conn.transaction(), conn.cursor() as cur:
        for key, encrypted, public_shares in plan.rounds:
            cur.execute(
                """INSERT INTO sbtc_signer.dkg_shares
                    (aggregate_key, tweaked_aggregate_key, encrypted_private_shares,
                     public_shares, script_pubkey, signer_set_public_keys,
                     signature_share_threshold, created_at, dkg_shares_status,
                     started_at_bitcoin_block_hash, started_at_bitcoin_block_height)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    key.aggregate_key,
                    key.tweaked_aggregate_key,
                    encrypted,
                    public_shares,
                    key.script_pubkey,
                    list(key.signer_set_public_keys),
                    key.threshold,
                    key.created_at,
                    key.status,
                    key.started_at_bitcoin_block_hash,
                    key.started_at_bitcoin_block_height,
                ),
            )
            if key.status == "verified":
                unit = key.started_at_bitcoin_block_height - FIRST_BITCOIN_HEIGHT
                cur.execute(
                    """INSERT INTO sbtc_signer.rotate_keys_transactions
                        (txid, address, aggregate_key, signer_set, signatures_required,
                         created_at, block_hash)
                    VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                    (
                        hash_value(plan.seed, "rkt", key.aggregate_key.hex()),
                        deployer,
                        key.aggregate_key,
                        list(key.signer_set_public_keys),
                        key.threshold,
                        key.created_at + timedelta(minutes=20),
                        hash_value(plan.seed, "stx", unit * STACKS_BLOCKS_PER_BITCOIN_BLOCK + 4),
                    ),
                )
        for index, public_key in enumerate(plan.signer_public_keys[1:SIGNER_COUNT], start=1):
            cur.execute(
                "INSERT INTO sbtc_signer.p2p_peers (public_key, peer_id, address, created_at,"
                " last_dialed_at) VALUES (%s, %s, %s, %s, %s)",
                (
                    public_key,
                    "12D3KooW" + hash_value(plan.seed, "peer", index).hex()[:44],
                    f"/dns4/signer-{index}.example.net/tcp/4122",
                    CHAIN_START,
                    _unit_time(plan.units - 1),
                ),
            )


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact rows of every table in sbtc_signer, plus public.__sbtc_migrations."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (SCHEMA,)
        ).fetchall()
    ]
    counts: dict[str, int] = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table)
        )
        result = conn.execute(query).fetchone()
        counts[table] = int(result[0]) if result else 0
    migrations = conn.execute("SELECT count(*) FROM public.__sbtc_migrations").fetchone()
    counts["public.__sbtc_migrations"] = int(migrations[0]) if migrations else 0
    return counts


def schema_bytes(conn: psycopg.Connection[Any]) -> int:
    """Bytes of the sbtc_signer tables with their TOAST tables and indexes."""
    result = conn.execute(
        """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind = 'r'""",
        (SCHEMA,),
    ).fetchone()
    return int(result[0]) if result else 0


# -- command line (benchmarks) ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sbtc_ops.devtools.signer_db",
        description="Fill a PostgreSQL database with a realistic sBTC signer schema and data.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SBTC_OPS_GENERATOR_DB_URL"),
        help="libpq URL or keyword string (default: $SBTC_OPS_GENERATOR_DB_URL)",
    )
    parser.add_argument("--size-mb", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replace", action="store_true", help="drop an existing sbtc_signer")
    parser.add_argument(
        "--key-out", type=Path, help="write the signer's (test) private key here, hex, mode 0600"
    )
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url or $SBTC_OPS_GENERATOR_DB_URL is required")

    def report(done: int, total: int) -> None:
        print(f"\r{done}/{total} units", end="", file=sys.stderr, flush=True)

    try:
        facts = generate(args.url, args.size_mb, args.seed, replace=args.replace, progress=report)
    except (UsageError, psycopg.Error) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    if args.key_out:
        descriptor = os.open(args.key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(facts.signer_private_key.hex() + "\n")
    print(json.dumps(facts.summary(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
