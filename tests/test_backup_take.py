"""`sbtc-ops backup` against a real PostgreSQL server: the manifest, consistency under writes,
failures that leave nothing behind, secrets, permissions and the lock."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from sbtc_ops.pg.cluster import free_tcp_port
from tests.support.backup import (
    cmdlines,
    fresh_database,
    manifest_of,
    modes_under,
    newest_verified_key,
    parse_json_output,
    sbtc_ops_popen,
    stopped,
    table_counts,
    wait_for_dump,
)
from tests.support.cli import CliResult
from tests.support.pg import SourceServer, new_signer_database
from tests.support.terminal import run_on_terminal

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]


def backup_json(cli: Cli, url: str, repo: Path, *extra: str) -> dict[str, object]:
    result = cli("-vv", "backup", "--db", url, "--to", str(repo), "--json", *extra)
    assert result.code == 0, result.stderr
    doc: dict[str, object] = result.json()
    return doc


def only_backup(repo: Path) -> Path:
    (entry,) = list(repo.iterdir())
    return entry


def test_manifest_describes_exactly_what_the_source_holds(
    cli: Cli, tmp_path: Path, small_db: tuple[str, GeneratedDb]
) -> None:
    url, facts = small_db
    repo = tmp_path / "repo"

    result = cli("backup", "--db", url, "--to", str(repo), "--json")

    assert result.code == 0, result.stderr
    manifest = result.json()["backup"]
    backup_dir = only_backup(repo)
    assert backup_dir.name == manifest["id"]
    on_disk = manifest_of(backup_dir)
    assert on_disk["rows"] == table_counts(url) == manifest["rows"]
    assert on_disk["rows"]["sbtc_signer.dkg_shares"] == facts.row_counts["dkg_shares"]
    assert on_disk["newest_verified_aggregate_key"] == facts.newest_verified_key.hex()
    assert on_disk["migrations"] == sorted(facts.migrations)
    assert on_disk["newest_migration"] == sorted(facts.migrations)[-1]
    assert on_disk["source"]["dbname"] == "small"
    assert on_disk["format"] == "custom" and on_disk["encryption"] is None
    assert on_disk["pg_dump_version"].split(".")[0] >= on_disk["server_version"].split(".")[0]
    for entry in on_disk["files"]:
        data = (backup_dir / entry["path"]).read_bytes()
        assert len(data) == entry["size"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert on_disk["total_size"] == sum(entry["size"] for entry in on_disk["files"])

    listed = cli("backups", "--repo", str(repo), "--json").json()["backups"]
    assert [(row["id"], row["state"]) for row in listed] == [(manifest["id"], "complete")]


def test_repository_directories_are_0700_and_files_0600(
    cli: Cli, tmp_path: Path, small_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    backup_json(cli, url, repo)
    backup_json(cli, url, repo, "--format", "directory", "--jobs", "2")

    modes = modes_under(repo)
    dirs = {path for path in modes if path == "." or (repo / path).is_dir()}
    assert {modes[path] for path in dirs} == {0o700}
    assert {modes[path] for path in modes if path not in dirs} == {0o600}
    assert len(modes) - len(dirs) > 5  # the directory format wrote one file per table


# -- one snapshot, while the signer writes --------------------------------------------------


class Writer(threading.Thread):
    """The signer at work: new bitcoin blocks and, now and then, a new verified DKG key."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.blocks = 0
        self.keys = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    self._insert_block(conn)
                    if self.blocks % 25 == 0:
                        self._insert_verified_key(conn)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _insert_block(self, conn: psycopg.Connection[object]) -> None:
        conn.execute(
            "INSERT INTO sbtc_signer.bitcoin_blocks (block_hash, block_height, parent_hash, "
            "created_at) VALUES (%s, %s, %s, clock_timestamp())",
            (secrets.token_bytes(32), 10_000_000 + self.blocks, secrets.token_bytes(32)),
        )
        self.blocks += 1

    def _insert_verified_key(self, conn: psycopg.Connection[object]) -> None:
        conn.execute(
            "INSERT INTO sbtc_signer.dkg_shares (aggregate_key, tweaked_aggregate_key, "
            "encrypted_private_shares, public_shares, script_pubkey, signer_set_public_keys, "
            "signature_share_threshold, created_at, dkg_shares_status, "
            "started_at_bitcoin_block_hash, started_at_bitcoin_block_height) VALUES "
            "(%s, %s, %s, %s, %s, ARRAY[%s], 2, "
            "'2100-01-01'::timestamptz + %s * interval '1 second', 'verified', %s, %s)",
            (
                b"\x02" + secrets.token_bytes(32),
                b"\x03" + secrets.token_bytes(32),
                secrets.token_bytes(2048),
                secrets.token_bytes(512),
                secrets.token_bytes(34),
                b"\x02" + secrets.token_bytes(32),
                self.keys,
                secrets.token_bytes(32),
                20_000_000 + self.keys,
            ),
        )
        self.keys += 1


@pytest.fixture
def writer_db(backup_server: SourceServer) -> Iterator[tuple[str, Writer]]:
    url, _ = new_signer_database(backup_server, target_mb=12.0, seed=3)
    writer = Writer(url)
    writer.start()
    try:
        yield url, writer
    finally:
        writer.stop.set()
        writer.join(30)


def test_manifest_matches_the_snapshot_while_the_signer_keeps_writing(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, writer_db: tuple[str, Writer]
) -> None:
    url, writer = writer_db
    while writer.keys < 2 and writer.is_alive():  # the signer is busy before the backup starts
        threading.Event().wait(0.01)
    repo = tmp_path / "repo"

    manifest = backup_json(cli, url, repo)["backup"]
    blocks_at_end = writer.blocks
    writer.stop.set()
    writer.join(30)
    assert writer.error is None, writer.error

    assert isinstance(manifest, dict)
    # The signer wrote before, during and after the backup …
    started = datetime.fromisoformat(manifest["started_at"])
    ended = datetime.fromisoformat(manifest["ended_at"])
    with psycopg.connect(url, autocommit=True) as conn:
        during = conn.execute(
            "SELECT count(*) FROM sbtc_signer.bitcoin_blocks WHERE created_at BETWEEN %s AND %s",
            (started, ended),
        ).fetchone()
    assert during is not None and during[0] > 0
    assert (
        table_counts(url)["sbtc_signer.bitcoin_blocks"]
        > manifest["rows"]["sbtc_signer.bitcoin_blocks"]
    )
    assert blocks_at_end > 0
    # … and what was restored is exactly what the manifest says was dumped.
    target = fresh_database(backup_server, "restored_snapshot")
    restored = cli("restore", str(only_backup(repo)), "--target-db", target, "--json")
    assert restored.code == 0, restored.stderr
    assert table_counts(target) == manifest["rows"]
    key = manifest["newest_verified_aggregate_key"]
    assert key == newest_verified_key(target)
    assert key != newest_verified_key(url)  # the signer made newer keys after the snapshot


# -- failures: exit 2, a clear message, nothing left behind --------------------------------


def failed_backup(
    cli: Cli, url: str, repo: Path, workdir: Path, env: dict[str, str] | None = None
) -> str:
    """Run a backup that must fail: exit 2, one JSON error, no traceback, nothing left."""
    result = cli("backup", "--db", url, "--to", str(repo), "--json", env=env)
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not repo.exists() or list(repo.iterdir()) == []
    staging = workdir / "state" / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    # No pg_dump of ours left running (others' tests may run their own meanwhile).
    assert not [argv for argv in cmdlines().values() if str(repo) in " ".join(argv)]
    error: str = result.json()["error"]
    return error


def test_unreachable_server(cli: Cli, tmp_path: Path, workdir: Path) -> None:
    url = f"postgresql://signer:hunter2@127.0.0.1:{free_tcp_port()}/signer"
    error = failed_backup(cli, url, tmp_path / "repo", workdir)
    assert error.startswith("cannot connect to postgresql://signer:*")
    assert "Connection refused" in error and "hunter2" not in error


def test_wrong_password(
    cli: Cli, tmp_path: Path, workdir: Path, backup_server: SourceServer
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    url = backup_server.url_for("small", password=wrong)
    error = failed_backup(cli, url, tmp_path / "repo", workdir)
    assert "cannot connect" in error and "password authentication failed" in error
    assert wrong not in error


def test_database_without_the_signer_schema(
    cli: Cli, tmp_path: Path, workdir: Path, backup_server: SourceServer
) -> None:
    url = fresh_database(backup_server, "not_a_signer_db")
    error = failed_backup(cli, url, tmp_path / "repo", workdir)
    assert "has no schema sbtc_signer" in error


def test_destination_not_writable(
    cli: Cli, tmp_path: Path, workdir: Path, small_db: tuple[str, GeneratedDb]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    error = failed_backup(cli, small_db[0], blocker / "repo", workdir)
    assert f"cannot create backup directory {blocker / 'repo'}" in error
    assert blocker.read_text() == "not a directory\n"


def test_no_suitable_pg_dump_is_said_clearly(
    cli: Cli, tmp_path: Path, workdir: Path, small_db: tuple[str, GeneratedDb]
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {"SBTC_OPS_POSTGRES__BIN_DIR": str(empty_bin)}
    error = failed_backup(cli, small_db[0], tmp_path / "repo", workdir, env=env)
    assert "pg_dump" in error and str(empty_bin) in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup", "--to", "REPO"], "no signer database configured"),
        (["backup", "--db", "DB", "--to", "ftp://host/x"], "unsupported backup location"),
        (["backup", "--db", "DB", "--to", "REPO", "--format", "tar"], "backup.format"),
        (["backup", "--db", "DB", "--to", "REPO", "--recipient", "nope"], "'nope' is not an age"),
        (["backup", "--db", "x=== y", "--to", "REPO"], "not a valid PostgreSQL URL"),
        (["backups"], "no backup location configured"),
        (["restore", "/no/such/backup", "--target-db", "DB"], "neither an existing file"),
        (["restore", "20250101T000000Z", "--repo", "REPO", "--target-db", "DB"], "not found"),
    ],
)
def test_bad_usage_exits_2_naming_what_is_wrong(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    db = f"postgresql://signer:pw@127.0.0.1:{free_tcp_port()}/signer"
    argv = [{"REPO": str(tmp_path / "repo"), "DB": db}.get(arg, arg) for arg in args]
    result = cli(*argv, "--json")
    assert result.code == 2
    assert message in result.json()["error"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").iterdir()) == []


# -- secrets -------------------------------------------------------------------------------


def test_password_never_in_argv_logs_manifest_or_output(
    tmp_path: Path, workdir: Path, backup_server: SourceServer, medium_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = medium_db
    password = backup_server.signer_password
    assert password in url
    repo = tmp_path / "repo"
    state = workdir / "state"
    # The URL comes from the environment, as from a config file: argv must stay clean.
    proc = sbtc_ops_popen(
        "-vv",
        "backup",
        "--to",
        str(repo),
        "--json",
        state_dir=state,
        cwd=workdir,
        env={"SBTC_OPS_DB__URL": url},
    )
    pg_dump = wait_for_dump(proc)
    with stopped(pg_dump):  # frozen mid-dump: read every argv on the host at leisure
        everyone = cmdlines()
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 0, stderr
    dump_argv = everyone[pg_dump]
    assert any(arg.startswith("--snapshot=") for arg in dump_argv)
    assert [argv for argv in everyone.values() if password in " ".join(argv)] == []
    assert password not in stdout and password not in stderr
    assert "DEBUG" in stderr or "INFO" in stderr  # -vv really logged something
    for path in [*repo.rglob("*"), *state.rglob("*")]:
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    manifest = parse_json_output(0, stdout, stderr).manifest
    assert "password" not in manifest["source"]


# -- the lock ------------------------------------------------------------------------------


def test_a_second_backup_while_one_runs_exits_2_already_running(
    tmp_path: Path, workdir: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    url, _ = medium_db
    repo = tmp_path / "repo"
    state = workdir / "state"
    first = sbtc_ops_popen("backup", "--db", url, "--to", str(repo), state_dir=state, cwd=workdir)
    pg_dump = wait_for_dump(first)
    with stopped(pg_dump):
        second = sbtc_ops_popen(
            "backup", "--db", url, "--to", str(repo), "--json", state_dir=state, cwd=workdir
        )
        stdout, _ = second.communicate(timeout=60)
    _, first_stderr = first.communicate(timeout=120)

    assert second.returncode == 2
    assert "already running" in parse_json_output(2, stdout, "").doc["error"]
    assert first.returncode == 0, first_stderr
    (backup_dir,) = list(repo.iterdir())  # the refused backup wrote nothing
    assert (backup_dir / "manifest.json").is_file()


# -- DKG-only --------------------------------------------------------------------------------


def test_dkg_only_backup_holds_only_dkg_shares_and_migrations(
    cli: Cli, tmp_path: Path, backup_server: SourceServer, medium_db: tuple[str, GeneratedDb]
) -> None:
    url, facts = medium_db
    repo = tmp_path / "repo"

    manifest = backup_json(cli, url, repo, "--dkg-only")["backup"]

    assert isinstance(manifest, dict)
    assert manifest["kind"] == "dkg-only" and manifest["id"].endswith("-dkg")
    assert set(manifest["rows"]) == {"sbtc_signer.dkg_shares", "public.__sbtc_migrations"}
    assert manifest["rows"]["sbtc_signer.dkg_shares"] == facts.row_counts["dkg_shares"]
    assert manifest["total_size"] < 200_000  # kB, not the 24 MB of the database
    target = fresh_database(backup_server, "restored_dkg_only")
    restored = cli("restore", str(repo / manifest["id"]), "--target-db", target, "--json")
    assert restored.code == 0, restored.stderr
    counts = table_counts(target)
    assert counts["sbtc_signer.dkg_shares"] == facts.row_counts["dkg_shares"]
    assert counts["public.__sbtc_migrations"] == len(facts.migrations)
    assert counts["sbtc_signer.bitcoin_blocks"] == 0  # the schema is there, the bulk is not


# -- progress ------------------------------------------------------------------------------


def test_progress_on_a_terminal_and_only_json_on_stdout(
    tmp_path: Path, workdir: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    """stderr is a terminal but --json asks for a document: no progress is drawn (the
    drawn progress is tests/test_progress.py's); stdout, a pipe, carries the JSON alone."""
    repo = tmp_path / "r"

    def hold_the_dump(proc: subprocess.Popen[bytes]) -> None:
        pg_dump = wait_for_dump(proc)
        while not any(p.stat().st_size for p in repo.rglob("signer.dump")):
            threading.Event().wait(0.01)
        with stopped(pg_dump):  # hold the dump with bytes written: the display polls twice a second
            threading.Event().wait(2.0)

    run = run_on_terminal(
        *("backup", "--db", medium_db[0], "--to", str(repo), "--json"),
        cwd=workdir,
        state_dir=workdir / "state",
        env={"COLUMNS": "120"},
        while_running=hold_the_dump,
        timeout_s=120,
    )
    screen = run.screen
    assert run.code == 0, screen
    assert "pg_dump" not in screen and "eta" not in screen, screen
    assert parse_json_output(0, run.stdout, screen).doc["ok"] is True
