"""Helpers for the `sbtc-ops verify` tests.

Every verify run gets its own short temporary directory as TMPDIR: the throwaway cluster and
the drill's work directory are made there, so after the run we can check, for that run
alone, that no postgres process survived and that nothing was left behind (other clusters,
such as the session's source server or a teammate's tests, do not disturb the check).
Every run also gets a fresh state directory unless one is given: verify remembers on-chain
keys it has seen (for the "stale" verdict), which must not leak from one case to another.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.pg import find_binaries
from sbtc_ops.state import StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.pg import SourceServer, assert_no_postgres_left

# Chain failures must be fast: one attempt, short timeouts.
FAST_CHAIN_ENV = {
    "SBTC_OPS_STACKS__TIMEOUT_S": "1.5",
    "SBTC_OPS_STACKS__CONNECT_TIMEOUT_S": "1",
    "SBTC_OPS_STACKS__RETRIES": "0",
}
# The best-practice page's query, verbatim (what an operator types into psql).
PAGE_QUERY = (
    "SELECT aggregate_key FROM sbtc_signer.dkg_shares WHERE dkg_shares_status = 'verified' "
    "ORDER BY created_at DESC"
)


def private_tmpdir(prefix: str = "sv-") -> Path:
    """A short directory under /tmp (unix socket paths must stay short) that the
    unprivileged PostgreSQL user can pass through."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


@dataclass
class VerifyRun:
    result: CliResult
    leftovers: list[str]  # entries left in the run's TMPDIR

    @property
    def code(self) -> int:
        return self.result.code

    @property
    def doc(self) -> dict[str, Any]:
        """The --json document; json.loads fails unless stdout is exactly one document."""
        document = json.loads(self.result.stdout)
        assert isinstance(document, dict)
        return document

    def check(self, check_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [c for c in self.doc["checks"] if c["id"] == check_id]
        assert len(found) == 1, f"{check_id} reported {len(found)} times; {self.context}"
        return found[0]

    @property
    def context(self) -> str:
        """The ends of stdout and stderr, for an assertion's message."""
        return f"stdout={self.result.stdout[-3000:]!r} stderr={self.result.stderr[-2000:]!r}"

    def problems(self) -> set[str]:
        return {c["id"] for c in self.doc["checks"] if c["status"] in ("fail", "error")}

    def expect(
        self, *, code: int, verdict: str, failing: str | None = None, status: str = "fail"
    ) -> dict[str, Any]:
        """Assert the exit code, the verdict and the one failing check; return that check."""
        context = self.context
        assert self.code == code, context
        assert self.doc["verdict"] == verdict, context
        assert self.doc["ok"] is (code == 0), context
        if failing is None:
            assert not self.problems(), context
            return {}
        check = self.check(failing)
        assert check["status"] == status, context
        assert check["remediation"], "a failing check must say what to do"
        return check


class Verifier:
    """Runs `sbtc-ops verify …` as a real process, each run in its own TMPDIR and state.

    `reference_from`: a state directory whose schema references (recorded by `sbtc-ops
    backup` or `schema pin`) every fresh state starts with: the generated test database is
    not the real signer schema, so only its own recorded schema vouches for its dumps."""

    def __init__(self, workdir: Path, reference_from: Path | None = None) -> None:
        self.workdir = workdir
        self.reference_from = reference_from
        workdir.mkdir(parents=True, exist_ok=True)

    def fresh_state(self) -> Path:
        state = Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir))
        if self.reference_from is not None:
            copy_schema_references(self.reference_from, state)
        return state

    def env(self, state_dir: Path, tmpdir: Path, extra: dict[str, str] | None) -> dict[str, str]:
        return clean_env(state_dir, {"TMPDIR": str(tmpdir), **FAST_CHAIN_ENV, **(extra or {})})

    def __call__(
        self,
        *args: str,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        json_output: bool = True,
        timeout: float = 180,
    ) -> VerifyRun:
        tmpdir = private_tmpdir()
        try:
            full_env = self.env(state_dir or self.fresh_state(), tmpdir, env)
            argv = ["verify", *args, *(["--json"] if json_output else [])]
            result = run_cli(*argv, cwd=self.workdir, env=full_env, timeout=timeout)
            assert "Traceback" not in result.stderr, result.stderr
            assert_no_postgres_left(tmpdir)
            leftovers = sorted(p.name for p in tmpdir.iterdir())
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        assert not leftovers, f"verify left {leftovers} in its temporary directory"
        return VerifyRun(result, leftovers)


@dataclass
class VerifyArea:
    """What a verify test module sets up once: a generated database (`facts`) backed up into
    `repo` with the state directory `state`, a fake node serving its chain, and a Verifier.
    Test modules subclass it with their own backups."""

    root: Path
    facts: GeneratedDb
    node: FakeStacksNode
    repo: Path
    state: Path  # the state directory the backups were taken with
    verify: Verifier


def take_backup(
    db_url: str, repo: Path, state_dir: Path, *extra: str, cwd: Path | None = None
) -> tuple[str, Path]:
    """`sbtc-ops backup --db URL --to REPO`: (backup id, its directory)."""
    result = run_cli(
        "backup",
        "--db",
        db_url,
        "--to",
        str(repo),
        "--json",
        *extra,
        cwd=cwd or repo.parent,
        env=clean_env(state_dir),
    )
    assert result.code == 0, result.stderr
    backup_id = str(result.json()["backup"]["id"])
    return backup_id, repo / backup_id


def pin_schema(db_url: str, state_dir: Path) -> dict[str, Any]:
    """`sbtc-ops schema pin --db URL`: the database's schema becomes the reference for its
    migration level in `state_dir` (what an operator does for dumps sbtc-ops did not take)."""
    result = run_cli(
        "schema", "pin", "--db", db_url, "--json", cwd=state_dir.parent, env=clean_env(state_dir)
    )
    assert result.code == 0, result.stderr
    document = result.json()
    assert isinstance(document, dict)
    return document


def copy_schema_references(source: Path, target: Path) -> None:
    with StateStore.open(source) as src, StateStore.open(target) as dst:
        for ref in src.schema_references():
            dst.record_schema_reference(ref.migrations, ref.digest, ref.objects_json, ref.source)


def operator_dump(server: SourceServer, dbname: str, target: Path, *pg_dump_args: str) -> Path:
    """pg_dump as an operator runs it by hand (embedded binary, password in PGPASSWORD)."""
    argv = [
        str(find_binaries(tool_hint="pg_dump").pg_dump),
        "--host=127.0.0.1",
        f"--port={server.port}",
        "--username=signer",
        f"--dbname={dbname}",
        f"--file={target}",
        *pg_dump_args,
    ]
    env = {**os.environ, "PGPASSWORD": server.signer_password}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return target


def gzip_file(source: Path, target: Path) -> Path:
    with source.open("rb") as reader, gzip.open(target, "wb", compresslevel=1) as writer:
        shutil.copyfileobj(reader, writer)
    return target


def zstd_file(source: Path, target: Path) -> Path:
    import zstandard

    with source.open("rb") as reader, target.open("wb") as writer:
        zstandard.ZstdCompressor(level=3).copy_stream(reader, writer)
    return target


def random_public_key() -> bytes:
    return PrivateKey(secrets.token_bytes(32)).public_key.format(compressed=True)


def serve_facts(node: FakeStacksNode, facts: GeneratedDb, key: bytes | None = None) -> None:
    """The registry as the chain would show it for this database's newest verified key
    (or for `key`, an older row of it)."""
    chosen = next(k for k in facts.keys if k.aggregate_key == (key or facts.newest_verified_key))
    node.clear_failures()
    node.set_aggregate_key(chosen.aggregate_key)
    node.set_signer_data(
        chosen.aggregate_key, list(chosen.signer_set_public_keys), threshold=chosen.threshold
    )


@contextmanager
def stacks_node_for(facts: GeneratedDb) -> Iterator[FakeStacksNode]:
    with FakeStacksNode(deployer=facts.deployer) as node:
        serve_facts(node, facts)
        yield node


def write_key_file(path: Path, secret: bytes) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret.hex() + "\n")
    return path
