"""audit database (DB-003…006) on real PostgreSQL: a growing database (the generator at two
sizes) for growth and days-to-full, dead tuples, and the schema version vs the image."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from sbtc_ops.audit.framework import Finding
from sbtc_ops.devtools.signer_db import generate
from sbtc_ops.signer.knowledge import load
from tests.support.audit2 import NOW, make_settings, run_area
from tests.support.pg import SourceServer, new_signer_database

pytestmark = pytest.mark.postgres


def df(avail: int, size: int = 100 * 10**9) -> str:
    return f"Mounted on 1B-blocks Avail\n/srv {size} {avail}\n"


def audit_db(
    tmp_path: Path, url: str, version: str = "1.3.3", avail: int = 50 * 10**9, days: float = 0
) -> dict[str, Finding]:
    data = tmp_path / "pgdata"  # df itself is a recorded answer: sizes of our choosing
    data.mkdir(exist_ok=True)
    settings = make_settings(
        tmp_path,
        db={"url": url},
        audit={"signer_version": version, "db_data_path": str(data)},
    )
    outputs = {f"df -B1 --output=target,size,avail {data}": df(avail)}
    return run_area(
        "database", settings, root=Path("/"), outputs=outputs, now=NOW + timedelta(days=days)
    )


def set_migrations(url: str, names: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.__sbtc_migrations")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.__sbtc_migrations (key) VALUES (%s)", [(n,) for n in names]
            )


def test_a_growing_database_gives_growth_and_days_until_full(
    tmp_path: Path, source_server: SourceServer
) -> None:
    url, _ = new_signer_database(source_server, target_mb=1.0, seed=21)
    first = audit_db(tmp_path, url)
    assert first["DB-004"].status.value == "pass"
    assert first["DB-004"].data["growth_bytes_per_day"] is None
    assert "unknown yet" in first["DB-004"].detail
    assert first["DB-003"].status.value == "pass"
    assert "largest:" in first["DB-003"].detail

    generate(url, target_mb=6.0, seed=21, replace=True)  # a day later, the DB has grown
    small = first["DB-004"].data["database_bytes"]
    later = audit_db(tmp_path, url, days=1, avail=10**12)
    big = later["DB-004"].data["database_bytes"]
    assert big > small
    per_day = later["DB-004"].data["growth_bytes_per_day"]
    assert per_day == pytest.approx(big - small)
    volume = later["DB-004"].data["volumes"]["/srv"]
    assert volume["days_until_full"] == pytest.approx(10**12 / per_day)
    assert later["DB-004"].status.value == "pass"

    # The same growth against a nearly full volume: days until full below a week fails.
    nearly_full = audit_db(tmp_path, url, days=1, avail=int(per_day * 3))
    assert nearly_full["DB-004"].status.value == "fail"
    assert "full in 3 days" in nearly_full["DB-004"].detail


def test_schema_version_behind_ahead_unknown_and_equal(
    tmp_path: Path, source_server: SourceServer
) -> None:
    url, _ = new_signer_database(source_server, target_mb=0.5, seed=22)
    table = load()
    set_migrations(url, list(table.migrations_at("1.2.0")))
    assert audit_db(tmp_path, url, "1.2.0")["DB-006"].status.value == "pass"

    behind = audit_db(tmp_path, url, "1.3.3")["DB-006"]
    assert behind.status.value == "fail"
    assert behind.data["behind"] == [
        "0021__alter_max_fee_column.sql",
        "0022__add_is_canonical_to_bitcoin_blocks.sql",
    ]

    ahead = audit_db(tmp_path, url, "1.1.1")["DB-006"]
    assert ahead.status.value == "fail"
    assert "ahead of signer v1.1.1 with 0020__drop_reclaim_script_column.sql" in ahead.detail

    set_migrations(url, [*table.migrations_at("1.2.0"), "0099__from_a_fork.sql"])
    unknown = audit_db(tmp_path, url, "1.2.0")["DB-006"]
    assert unknown.status.value == "warn"
    assert unknown.data["unknown"] == ["0099__from_a_fork.sql"]


def wait_for_dead_tuples(url: str, table: str, at_least: int) -> None:
    """Statistics reach pg_stat_user_tables asynchronously: wait (bounded) until they have."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)
            ).fetchone()
        if row is not None and row[0] >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"{table} never showed {at_least} dead tuples")


def test_dead_tuples_of_a_table_autovacuum_cannot_reach_are_flagged(
    tmp_path: Path, source_server: SourceServer
) -> None:
    url, _ = new_signer_database(source_server, target_mb=0.5, seed=23)
    table = "stacks_blocks"
    with psycopg.connect(url, autocommit=True) as conn:
        # A busy signer's stacks_blocks: many rows, then every row updated with autovacuum off.
        conn.execute(
            "INSERT INTO sbtc_signer.stacks_blocks (block_hash, block_height, parent_hash, "
            "bitcoin_anchor) SELECT sha256(('x' || n)::bytea), 10000000 + n, "
            "sha256(('p' || n)::bytea), sha256(('a' || n)::bytea) FROM generate_series(1, 15000) n"
        )
        conn.execute(f"ALTER TABLE sbtc_signer.{table} SET (autovacuum_enabled = false)")
        conn.execute(f"UPDATE sbtc_signer.{table} SET block_height = block_height")
        conn.execute("SELECT pg_stat_force_next_flush()")
    wait_for_dead_tuples(url, table, 15_000)
    finding = audit_db(tmp_path, url)["DB-005"]
    assert finding.status.value == "warn"
    assert finding.data["tables"][0]["table"] == table
    assert finding.data["tables"][0]["fraction"] >= 0.4
