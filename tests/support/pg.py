"""Real PostgreSQL for tests: a source server that stands in for a signer's database.

Its fixtures reach every test module through `pytest_plugins` in tests/conftest.py: take
them as parameters, do not import them (an import makes a per-module copy of the fixture).

`source_server` (session) is a ThrowawayCluster listening on 127.0.0.1 with scram-sha-256
password auth and a `signer` role, so backups exercise a real `postgresql://signer:PW@…`
db_endpoint. `signer_db` (session) is a generated, realistic signer database on it.
`new_signer_database` makes a fresh one for a test that changes data.
`assert_no_postgres_left` checks that no throwaway-cluster postgres process survives.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sbtc_ops.errors import DependencyError
from sbtc_ops.pg import ThrowawayCluster, find_binaries, postgres_processes
from sbtc_ops.pg.binaries import PgBinaries

if TYPE_CHECKING:
    import psycopg

    from sbtc_ops.devtools.signer_db import GeneratedDb

SIGNER_ROLE = "signer"
_database_numbers = itertools.count(1)


@dataclass
class SourceServer:
    """A running test server: superuser access over the socket, `signer` over TCP+password."""

    cluster: ThrowawayCluster
    signer_password: str

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def superuser_conninfo(self) -> str:
        return self.cluster.conninfo("postgres")

    @property
    def signer_url(self) -> str:
        """postgresql://signer:PW@127.0.0.1:PORT/signer: the default signer database."""
        return self.url_for(SIGNER_ROLE)

    def url_for(self, dbname: str, password: str | None = None) -> str:
        return self.cluster.tcp_url(dbname, SIGNER_ROLE, password or self.signer_password)

    def superuser_conninfo_for(self, dbname: str) -> str:
        return self.cluster.conninfo(dbname)

    def connect(self, dbname: str = SIGNER_ROLE) -> psycopg.Connection[Any]:
        """A superuser connection (autocommit) to `dbname`."""
        return self.cluster.connect(dbname)

    def create_signer_database(self, dbname: str) -> str:
        """An empty database owned by `signer`; returns its TCP URL."""
        self.cluster.create_database(dbname, owner=SIGNER_ROLE)
        return self.url_for(dbname)


def binaries_or_skip() -> PgBinaries:
    """The PostgreSQL binaries, or the test is skipped saying why there are none."""
    try:
        return find_binaries(tool_hint="postgres")
    except DependencyError as exc:
        pytest.skip(f"no PostgreSQL binaries: {exc}")


def start_source_server(parent: Path | None = None) -> SourceServer:
    """Start a TCP+password server with the `signer` role and an empty `signer` database.
    The caller stops it with `server.cluster.stop()`."""
    binaries = binaries_or_skip()
    return start_source_on(ThrowawayCluster(binaries, parent=parent, tcp_port=0))


def start_source_on(cluster: ThrowawayCluster) -> SourceServer:
    """Start `cluster` (TCP) with the `signer` role (a random password) and an empty `signer`
    database; the cluster is stopped again if that fails."""
    cluster.start()
    try:
        password = "pw-" + secrets.token_hex(12)
        cluster.create_role(SIGNER_ROLE, password)
        server = SourceServer(cluster, password)
        server.create_signer_database(SIGNER_ROLE)
    except BaseException:
        cluster.stop()
        raise
    return server


@pytest.fixture(scope="session")
def source_server() -> Iterator[SourceServer]:
    server = start_source_server()
    try:
        yield server
    finally:
        server.cluster.stop()


def new_signer_database(
    server: SourceServer, target_mb: float = 3.0, seed: int = 1, dbname: str | None = None
) -> tuple[str, GeneratedDb]:
    """A fresh database owned by `signer`, filled by the generator: (signer URL, facts)."""
    from sbtc_ops.devtools.signer_db import generate

    name = dbname or f"signer_{next(_database_numbers)}_{secrets.token_hex(3)}"
    url = server.create_signer_database(name)
    facts = generate(url, target_mb=target_mb, seed=seed)
    return url, facts


@pytest.fixture(scope="session")
def signer_db(source_server: SourceServer) -> tuple[str, GeneratedDb]:
    """A generated signer database (about 3 MB, seed 1) shared by the session: do not modify
    it; use `new_signer_database` for a test that does."""
    return new_signer_database(source_server, target_mb=3.0, seed=1, dbname="signer_shared")


def assert_no_postgres_left(under: Path | None = None, grace_s: float = 5.0) -> None:
    """Fail when a throwaway-cluster postgres process is still alive after `grace_s`.

    `under` narrows the check to clusters below one directory (use it when other clusters,
    e.g. the session's source server, legitimately run); without it every `sbtc-pg-*`
    cluster on the host counts, so exclude known servers yourself.
    """
    deadline = time.monotonic() + grace_s
    while True:
        left = postgres_processes(under)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)  # backends exit shortly after their postmaster
    assert not left, f"postgres processes outlived their run: {left}"


def postgres_left_except(*servers: ThrowawayCluster) -> list[tuple[int, str]]:
    """Live throwaway-cluster postgres processes that do not belong to `servers`."""
    known = [str(server.base_dir) + "/" for server in servers if server.running]
    return [
        (pid, cwd)
        for pid, cwd in postgres_processes()
        if not any((cwd + "/").startswith(prefix) for prefix in known)
    ]


@pytest.fixture
def cluster_parent() -> Iterator[Path]:
    """A short private directory for throwaway clusters (socket paths must stay < 100 chars),
    searchable by the unprivileged server user; checked for leftover postgres and removed.
    Point TMPDIR of an sbtc-ops child process at it to find that process's clusters."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sbtc-t-", dir="/tmp"))
    path.chmod(0o711)  # our own directory: the server user must pass through it
    try:
        yield path
        assert_no_postgres_left(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
