"""`sbtc-ops restore`: round trips (custom, directory, encrypted), and the refusals that protect
an operator from restoring over the wrong database or from a damaged archive."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pyrage
import pytest

from tests.support.backup import (
    dkg_rows,
    fresh_database,
    table_counts,
)
from tests.support.cli import CliResult
from tests.support.pg import SourceServer
from tests.support.verify import pin_schema

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]
_targets = itertools.count(1)


def new_target(server: SourceServer) -> str:
    return fresh_database(server, f"restore_target_{next(_targets)}")


def take(cli: Cli, url: str, repo: Path, *extra: str) -> str:
    result = cli("backup", "--db", url, "--to", str(repo), "--json", *extra)
    assert result.code == 0, result.stderr
    backup_id: str = result.json()["backup"]["id"]
    return backup_id


def user_tables(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema')"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_round_trip_gives_the_same_rows(
    cli: Cli,
    tmp_path: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    fmt: str,
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup_id = take(cli, url, repo, "--format", fmt, "--jobs", "2")
    target = new_target(backup_server)

    result = cli("restore", backup_id, "--repo", str(repo), "--target-db", target, "--json")

    assert result.code == 0, result.stderr
    assert result.json()["backup"] == backup_id and result.json()["format"] == fmt
    assert table_counts(target) == table_counts(url)
    assert dkg_rows(target) == dkg_rows(url)
    assert target.split("@")[0].split(":")[-1] not in result.stdout  # no password shown


@pytest.fixture
def age_identity(tmp_path: Path) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "backup.key"
    path.write_text(f"# test identity\n{identity}\n")
    path.chmod(0o600)
    return path, str(identity.to_public())


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_encrypted_round_trip_needs_the_identity(
    cli: Cli,
    tmp_path: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    age_identity: tuple[Path, str],
    fmt: str,
) -> None:
    url, _ = small_db
    identity_file, recipient = age_identity
    repo = tmp_path / "repo"
    backup_id = take(cli, url, repo, "--recipient", recipient, "--format", fmt)

    backup_dir = repo / backup_id
    manifest = cli("backups", "--repo", str(repo), "--json").json()["backups"][0]
    assert manifest["encrypted"] is True
    data_files = [p for p in backup_dir.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert data_files and all(p.name.endswith(".age") for p in data_files)
    for path in data_files:
        assert path.read_bytes().startswith(b"age-encryption.org/v1")
    assert (
        str(identity_file.read_text()).split()[-1] not in (backup_dir / "manifest.json").read_text()
    )

    target = new_target(backup_server)
    refused = cli("restore", str(backup_dir), "--target-db", target, "--json")
    assert refused.code == 2
    assert "no age identity" in refused.json()["error"]
    assert user_tables(target) == 0

    result = cli(
        "restore", str(backup_dir), "--target-db", target, "--identity", str(identity_file)
    )
    assert result.code == 0, result.stderr
    assert table_counts(target) == table_counts(url)
    assert dkg_rows(target) == dkg_rows(url)


def test_restore_refuses_a_non_empty_target_unless_forced(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup_id = take(cli, url, repo)
    target = new_target(backup_server)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (line TEXT)")
        conn.execute("INSERT INTO notes VALUES ('precious')")

    refused = cli("restore", str(repo / backup_id), "--target-db", target, "--json")

    assert refused.code == 2
    assert "is not empty (1 tables); nothing was restored" in refused.json()["error"]
    assert user_tables(target) == 1

    forced = cli("restore", str(repo / backup_id), "--target-db", target, "--force")
    assert forced.code == 0, forced.stderr
    assert table_counts(target) == table_counts(url)
    with psycopg.connect(target, autocommit=True) as conn:
        assert conn.execute("SELECT line FROM notes").fetchall() == [("precious",)]


def test_restore_refuses_the_live_database_unless_named(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    """Disaster recovery into the signer's own database (recreated empty): the configured
    db_endpoint is refused unless --overwrite-live-db repeats its name."""
    url, _ = small_db
    repo = tmp_path / "repo"
    backup_id = take(cli, url, repo)
    live_name = "live_signer"
    live = fresh_database(backup_server, live_name)
    config = {"SBTC_OPS_DB__URL": live}
    # The same database, spelled differently (localhost instead of 127.0.0.1).
    spelled = live.replace("127.0.0.1", "localhost")

    for wrong in ([], ["--overwrite-live-db", "signer"]):
        refused = cli(
            "restore", str(repo / backup_id), "--target-db", spelled, "--json", *wrong, env=config
        )
        assert refused.code == 2
        error = refused.json()["error"]
        assert "is the live signer database" in error
        assert f"--overwrite-live-db {live_name}" in refused.stderr + error
        assert user_tables(live) == 0

    allowed = cli(
        "restore",
        str(repo / backup_id),
        "--target-db",
        spelled,
        "--overwrite-live-db",
        live_name,
        env=config,
    )
    assert allowed.code == 0, allowed.stderr
    assert table_counts(live) == table_counts(url)


def test_a_corrupted_archive_is_refused_and_nothing_restored(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup_id = take(cli, url, repo)
    damaged = tmp_path / "damaged"
    shutil.copytree(repo / backup_id, damaged)
    archive = damaged / "signer.dump"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the table data
    archive.write_bytes(bytes(data))
    target = new_target(backup_server)

    result = cli("restore", str(damaged), "--target-db", target, "--json")

    assert result.code == 2
    error = result.json()["error"]
    assert "fails its checksum, nothing was restored" in error and "signer.dump" in error
    assert user_tables(target) == 0
    assert cli("restore", str(repo / backup_id), "--target-db", target).code == 0


# -- finishing the job: --clean, --create, the summary --------------------------------------------


def _restore(cli: Cli, backup: Path, target: str, *flags: str) -> CliResult:
    return cli("restore", str(backup), "--target-db", target, "--json", *flags)


def test_a_target_with_the_schema_is_refused_then_clean_replaces_it(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    url, facts = small_db
    repo = tmp_path / "repo"
    backup = repo / take(cli, url, repo)
    target = new_target(backup_server)
    first = _restore(cli, backup, target)
    assert first.code == 0, first.stderr
    summary = first.json()["summary"]
    assert summary["tables"] == len(table_counts(url))
    assert summary["rows"] == sum(table_counts(url).values())
    assert summary["rows_match_manifest"] is True
    assert summary["newest_verified_dkg_key"] == facts.newest_verified_key.hex()
    with psycopg.connect(target, autocommit=True) as conn:  # the target drifts
        conn.execute("DELETE FROM sbtc_signer.bitcoin_blocks WHERE random() < 0.5")
    drifted = table_counts(target)

    for flags in ((), ("--force",)):
        refused = _restore(cli, backup, target, *flags)
        assert refused.code == 2
        error = refused.json()["error"]
        assert "already has schema sbtc_signer" in error and "nothing was restored" in error
        assert "--clean" in refused.stderr
        assert table_counts(target) == drifted

    cleaned = _restore(cli, backup, target, "--clean")

    assert cleaned.code == 0, cleaned.stderr
    doc = cleaned.json()
    assert doc["cleaned"] is True and doc["single_transaction"] is True
    assert doc["summary"]["rows_match_manifest"] is True
    assert table_counts(target) == table_counts(url)
    assert dkg_rows(target) == dkg_rows(url)
    text = cli("restore", str(backup), "--target-db", target, "--clean")
    assert text.code == 0, text.stderr
    assert "one transaction" in text.stdout and facts.newest_verified_key.hex() in text.stdout


def test_a_clean_restore_that_fails_leaves_the_target_unchanged(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup = repo / take(cli, url, repo)
    target = new_target(backup_server)
    assert _restore(cli, backup, target).code == 0
    with psycopg.connect(target, autocommit=True) as conn:
        # Not in the backup: DROP SCHEMA sbtc_signer (without CASCADE) fails on it.
        conn.execute("CREATE TABLE sbtc_signer.operator_notes (line TEXT)")
        conn.execute("DELETE FROM sbtc_signer.bitcoin_blocks WHERE random() < 0.5")
    before = table_counts(target)

    failed = _restore(cli, backup, target, "--clean")

    assert failed.code == 2
    error = failed.json()["error"]
    assert "rolled back: the target database is unchanged" in error
    assert table_counts(target) == before


def test_a_missing_target_gets_a_hint_and_create_makes_it(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, small_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup = repo / take(cli, url, repo)
    name = f"restore_created_{next(_targets)}"
    target = backup_server.url_for(name)

    missing = _restore(cli, backup, target)

    assert missing.code == 2
    assert f"the target database '{name}' does not exist" in missing.json()["error"]
    assert "nothing was restored" in missing.json()["error"]
    assert "add --create" in missing.stderr
    with backup_server.connect("postgres") as conn:
        conn.execute("ALTER ROLE signer CREATEDB")
    try:
        created = _restore(cli, backup, target, "--create")
    finally:
        with backup_server.connect("postgres") as conn:
            conn.execute("ALTER ROLE signer NOCREATEDB")

    assert created.code == 0, created.stderr
    assert created.json()["created"] is True
    assert table_counts(target) == table_counts(url)
    # --create on a database that exists (and is empty of the backup's schemas) just restores
    # into it; one that holds them is still refused.
    again = _restore(cli, backup, target, "--create")
    assert again.code == 2 and "already has schema sbtc_signer" in again.json()["error"]


def test_a_plain_sql_dump_is_proven_then_restored_through_a_custom_redump(
    cli: Cli,
    tmp_path: Path,
    workdir: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
) -> None:
    """A plain dump is never replayed against the target: the drill's proven copy is dumped
    again (custom) in the sandbox and pg_restore'd, so --clean works on it too."""
    from sbtc_ops.pg import find_binaries

    url, _ = small_db
    dump = tmp_path / "signer.sql"
    pg_dump = find_binaries(tool_hint="pg_dump").pg_dump
    done = subprocess.run(
        [str(pg_dump), "--no-owner", "--no-privileges", "-f", str(dump), "--dbname", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    target = new_target(backup_server)
    pin_schema(url, workdir / "state")  # a dump sbtc-ops did not take: pin its schema

    restored = _restore(cli, dump, target)

    assert restored.code == 0, restored.stderr
    doc = restored.json()
    assert doc["single_transaction"] is True
    assert doc["format"] == "custom" and "re-dumped" in " ".join(doc["steps"])
    assert doc["identity"]["verified"] is True and doc["forced_unverified"] is False
    assert "not restored" in doc["not_restored"]
    assert doc["summary"]["rows_match_manifest"] is None  # no manifest
    assert table_counts(target) == table_counts(url)
    cleaned = _restore(cli, dump, target, "--clean")
    assert cleaned.code == 0, cleaned.stderr
    assert table_counts(target) == table_counts(url)
