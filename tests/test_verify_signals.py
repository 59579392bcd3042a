"""SIGTERM during `sbtc-ops verify`: the run stops with a non-zero status, and its throwaway
cluster (every postgres process) and temporary files are gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.pg import postgres_processes
from tests.support.cli import clean_env, sbtc_ops_executable
from tests.support.pg import (
    SourceServer,
    assert_no_postgres_left,
    new_signer_database,
)
from tests.support.verify import FAST_CHAIN_ENV, private_tmpdir, take_backup

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class BigBackup:
    root: Path
    facts: GeneratedDb
    repo: Path
    backup_id: str


@pytest.fixture(scope="module")
def big_backup(
    source_server: SourceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> BigBackup:
    """A signer database big enough (about 40 MB) that its restore takes a moment."""
    root = tmp_path_factory.mktemp("verify-signals")
    url, facts = new_signer_database(source_server, target_mb=40.0, seed=43)
    repo = root / "repo"
    backup_id, _ = take_backup(url, repo, root / "backup-state")
    return BigBackup(root, facts, repo, backup_id)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = private_tmpdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def children_named(ancestor: int, name: str) -> list[int]:
    """Live descendants of `ancestor` running program `name` (the sandbox puts pg_restore
    below an `unshare` and a namespace init)."""
    parents: dict[int, int] = {}
    exes: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            exes[int(entry.name)] = (entry / "exe").readlink().name
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        for _ in range(16):
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid, exe in exes.items() if exe == name and descends(pid)]


def wait_for(condition: object, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, "verify ended before the restore could be interrupted"
        assert time.monotonic() < deadline, "the restore never started"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_restore_cleans_up(
    big_backup: BigBackup, run_dir: Path, signum: signal.Signals
) -> None:
    env = clean_env(
        big_backup.root / f"state-{signum.name}", {"TMPDIR": str(run_dir), **FAST_CHAIN_ENV}
    )
    proc = subprocess.Popen(
        [
            sbtc_ops_executable(),
            "verify",
            big_backup.backup_id,
            "--repo",
            str(big_backup.repo),
            "--expected-key",
            big_backup.facts.newest_verified_key.hex(),
            "--json",
        ],
        cwd=big_backup.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: children_named(proc.pid, "pg_restore"), proc)
        assert postgres_processes(under=run_dir), "the throwaway cluster should be running"
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # 128 + SIGINT: "interrupted", whichever signal it was
    assert "Traceback" not in stderr, stderr
    assert_no_postgres_left(run_dir)
    assert not children_named(proc.pid, "pg_restore")
    assert sorted(p.name for p in run_dir.iterdir()) == []  # cluster and work directories
    del stdout
