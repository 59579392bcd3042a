"""state.db is shared by threads of one process (serve's jobs) and by other processes (the
CLI beside the daemon). Opening a store must never drop the SQLite locks another connection
of the same process holds: closing any ordinary fd of a file drops all of the process's
POSIX locks on it, and another process's closing connection then deletes the WAL under the
live ones ("disk I/O error", seen in serve under load)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.state import StateStore

OTHER_PROCESS = """
import sys
from pathlib import Path
from sbtc_ops.state import StateStore
with StateStore.open(Path(sys.argv[1])) as store:
    store.runs("backup", limit=1)
"""


def open_and_close_elsewhere(state: Path) -> None:
    subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(state)], check=True, timeout=60)


def test_a_second_store_in_this_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as held:
        held.start_run("backup", at=1.0)
        for round_ in range(3):
            with StateStore.open(tmp_path) as other:  # opened and closed beside `held`
                other.runs("backup", limit=1)
            # Another process's last-looking close would checkpoint and delete the WAL.
            open_and_close_elsewhere(tmp_path)
            assert (tmp_path / "state.db-wal").exists()
            held.start_run("verify", at=2.0 + round_)
        assert [run.job for run in held.runs(limit=10)].count("verify") == 3


def test_threads_opening_stores_at_once_beside_another_process(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    errors: list[BaseException] = []

    def job(name: str) -> None:
        try:
            for i in range(20):
                with StateStore.open(tmp_path) as store:
                    run_id = store.start_run(name, at=float(i))
                    store.finish_run(run_id, "ok", {}, at=float(i) + 0.5)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(f"job-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        open_and_close_elsewhere(tmp_path)
    for thread in threads:
        thread.join(120)
    assert errors == []
    with StateStore.open(tmp_path) as store:
        assert len([r for r in store.runs(limit=200) if r.outcome == "ok"]) == 80


def test_a_symlinked_database_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    target.chmod(0o640)
    (state / "state.db").symlink_to(target)
    with pytest.raises(SbtcOpsError, match="cannot open the state database"):
        StateStore.open(state)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_bytes() == b""


def test_an_existing_database_gets_the_directory_mode(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    database = tmp_path / "state.db"
    os.chmod(database, 0o644)
    StateStore.open(tmp_path).close()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
