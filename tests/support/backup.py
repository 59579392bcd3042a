"""Helpers for the backup tests: processes to catch mid-flight, databases to compare, fake
repositories to prune.

Fixtures (they reach every test module through `pytest_plugins` in tests/conftest.py: take
them as parameters, do not import them):

`backup_server` (session): one TCP+password PostgreSQL server for every backup test module.
`small_db` (session): a generated signer database of about 3 MB. `medium_db` (session): about
24 MB, large enough for pg_dump to run a few hundred milliseconds and for an uncompressed
archive to need a multipart upload (> 16 MiB). Do not modify them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from sbtc_ops.backup.manifest import MANIFEST_NAME, Manifest
from tests.support.cli import clean_env, sbtc_ops_executable
from tests.support.pg import (
    SourceServer,
    assert_no_postgres_left,
    new_signer_database,
    start_source_server,
)

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

MEDIUM_DB_MB = 24.0


@pytest.fixture(scope="session")
def backup_server() -> Iterator[SourceServer]:
    """The source server of the backup tests, apart from tests/support/pg.py's `source_server`
    so that the backup tests' databases and what they assert about them stay their own."""
    server = start_source_server()
    try:
        yield server
    finally:
        base = server.cluster.base_dir
        server.cluster.stop()
        assert_no_postgres_left(base)


@pytest.fixture(scope="session")
def small_db(backup_server: SourceServer) -> tuple[str, GeneratedDb]:
    """A generated signer database of about 3 MB (seed 1). Do not modify it."""
    return new_signer_database(backup_server, target_mb=3.0, seed=1, dbname="small")


@pytest.fixture(scope="session")
def medium_db(backup_server: SourceServer) -> tuple[str, GeneratedDb]:
    return new_signer_database(backup_server, target_mb=MEDIUM_DB_MB, seed=7, dbname="medium")


# -- databases ----------------------------------------------------------------------------


def table_counts(url: str) -> dict[str, int]:
    """Rows per table of sbtc_signer plus the migrations table, named as in the manifest."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = "
                "'sbtc_signer' OR (schemaname = 'public' AND tablename = '__sbtc_migrations')"
            ).fetchall()
        ]
        counts = {}
        for table in tables:
            schema, name = table.split(".", 1)
            row = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
                    psycopg.sql.Identifier(schema), psycopg.sql.Identifier(name)
                )
            ).fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


def dkg_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT aggregate_key, tweaked_aggregate_key, encrypted_private_shares, "
            "public_shares, script_pubkey, signer_set_public_keys, signature_share_threshold, "
            "created_at, dkg_shares_status::text FROM sbtc_signer.dkg_shares ORDER BY 1"
        ).fetchall()


def newest_verified_key(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares "
            "WHERE dkg_shares_status = 'verified' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    return str(row[0]) if row else None


def fresh_database(server: SourceServer, name: str) -> str:
    """An empty database owned by the signer role; its TCP URL."""
    return server.create_signer_database(name)


# -- processes ----------------------------------------------------------------------------


def sbtc_ops_popen(
    *args: str, state_dir: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`sbtc-ops ARGS…` started in the background (to be caught mid-flight)."""
    return subprocess.Popen(
        [sbtc_ops_executable(), *args],
        cwd=cwd,
        env=clean_env(state_dir, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_for_child(
    parent: subprocess.Popen[Any], name: str, timeout_s: float = 60.0, with_arg: str = ""
) -> int:
    """The pid of `parent`'s child process called `name` (with an argument starting with
    `with_arg`, to tell e.g. the real pg_dump from a `pg_dump --version` probe), as soon as
    it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in pids():
            if (
                _ppid(pid) == parent.pid
                and process_name(pid) == name
                and any(arg.startswith(with_arg) for arg in _argv(pid))
            ):
                return pid
        if parent.poll() is not None:
            _, stderr = parent.communicate()
            raise AssertionError(f"sbtc-ops exited ({parent.returncode}) before {name}: {stderr}")
        time.sleep(0.002)
    raise AssertionError(f"no {name} child of {parent.pid} within {timeout_s} s")


def cmdlines() -> dict[int, list[str]]:
    """argv of every process on the host, as `ps` would show it to anyone."""
    return {pid: _argv(pid) for pid in pids()}


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    """True once `pid` is gone (or a zombie), checking at least once."""
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def kill_if_alive(pid: int) -> None:
    """Cleanup after a failed assertion: never leave a (stopped) process behind."""
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Freeze a process (SIGSTOP) for the duration of the block."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGCONT)


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


# -- repositories -------------------------------------------------------------------------


def manifest_of(backup_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((backup_dir / MANIFEST_NAME).read_text())
    return data


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything below it, by relative path."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


def fake_manifest(backup_id: str, kind: str = "full") -> Manifest:
    """A valid manifest for a backup id, for repositories of fake backups (prune tests)."""
    return Manifest(
        id=backup_id,
        kind=kind,
        started_at="2026-01-01T00:00:00+00:00",
        ended_at="2026-01-01T00:00:01+00:00",
        duration_s=1.0,
        source={"host": "127.0.0.1", "port": 5432, "dbname": "signer", "user": "signer"},
        server_version="18.0",
        pg_dump_version="18.0",
        format="custom",
        compression="gzip:1",
        files=[],
        total_size=0,
        rows={},
        migrations=[],
        network="mainnet",
        deployer="SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4",
        sbtc_ops_version="test",
    )


def write_fake_backups(root: Path, complete: Iterable[str], incomplete: Iterable[str] = ()) -> None:
    """Backup directories as `backup` leaves them: complete ones with a manifest, incomplete
    ones as `<id>.partial/` (a dump cut short)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for backup_id in complete:
        directory = root / backup_id
        directory.mkdir(mode=0o700)
        (directory / "signer.dump").write_bytes(b"PGDMP fake")
        (directory / MANIFEST_NAME).write_bytes(fake_manifest(backup_id).to_bytes())
    for backup_id in incomplete:
        directory = root / f"{backup_id}.partial"
        directory.mkdir(mode=0o700)
        (directory / "signer.dump").write_bytes(b"PGDMP cut short")


@dataclass
class BackupRun:
    code: int
    stdout: str
    stderr: str
    doc: dict[str, Any]

    @property
    def manifest(self) -> dict[str, Any]:
        backup: dict[str, Any] = self.doc["backup"]
        return backup


def parse_json_output(code: int, stdout: str, stderr: str) -> BackupRun:
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document: {stdout!r} / {stderr}") from exc
    return BackupRun(code, stdout, stderr, doc)


def wait_for_dump(backup: subprocess.Popen[Any]) -> int:
    """The pid of the pg_dump that dumps the snapshot (not a `pg_dump --version` probe)."""
    return wait_for_child(backup, "pg_dump", with_arg="--snapshot=")
