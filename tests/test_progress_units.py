"""progress.py without a terminal: read counting of a process tree, verbose lines, and
silence when progress is not shown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops import progress


@pytest.fixture
def verbosity() -> Iterator[None]:
    yield
    progress.configure(verbosity=0, quiet=False)


def test_reads_of_a_process_tree_include_reaped_children(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x" * (3 * 1024 * 1024))
    # The shell reads nothing itself; `cat` reads the file and is reaped by the shell, so its
    # reads must be found in the shell's count.
    shell = subprocess.Popen(
        ["sh", "-c", f"cat {data} > /dev/null; echo done; sleep 30"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline() == b"done\n"
        assert progress.tree_reads(shell.pid) >= data.stat().st_size
    finally:
        os.killpg(shell.pid, signal.SIGKILL)  # the shell and its sleep
        shell.communicate()


def test_descendants_are_found(tmp_path: Path) -> None:
    outer = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not progress.descendants(outer.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(progress.descendants(outer.pid)) == 1
    finally:
        os.killpg(outer.pid, signal.SIGKILL)
        outer.communicate()


def test_verbose_steps_and_commands(capsys: pytest.CaptureFixture[str], verbosity: None) -> None:
    progress.configure(verbosity=1)
    progress.echo_commands()
    with progress.StepProgress("verify", ["one", "two"]) as steps:
        steps.update("one")
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        steps.update("two")
    err = capsys.readouterr().err
    assert "verify: one\n" in err and "verify: two\n" in err
    assert f"run: {sys.executable} -c pass" in err
    assert "took" not in err

    progress.configure(verbosity=2)
    with progress.StepProgress("verify", ["one"]) as steps:
        steps.update("one")
    err = capsys.readouterr().err
    assert "verify: one took " in err and err.startswith("[")

    progress.configure(verbosity=0)
    with progress.StepProgress("verify", ["one"]) as steps:
        steps.update("one")
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert capsys.readouterr().err == ""


def test_no_progress_off_a_terminal_or_with_json(verbosity: None) -> None:
    assert not progress.shown()  # pytest captures stderr: not a terminal
    with progress.byte_progress("x", 10) as advance:
        advance(5)  # a no-op, no error
    progress.configure(quiet=True)
    assert not progress.shown()
