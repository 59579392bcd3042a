"""The plumbing every caller shares, each behaviour tested once here: sbtc_ops.proc (children,
groups, background work) and sbtc_ops.files (private writes, hostile-path reads)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sbtc_ops import files, proc
from sbtc_ops.files import UnsafeFileError


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


# -- files -------------------------------------------------------------------------------------


def test_atomic_write_survives_short_writes_and_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    files.write_private_atomic(target, b"0123456789" * 10)
    monkeypatch.undo()
    assert target.read_bytes() == b"0123456789" * 10
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old and complete")

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.write_private_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old and complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_create_private_never_opens_an_existing_path_or_a_link(tmp_path: Path) -> None:
    (tmp_path / "exists").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name in ("exists", "link"):
        with pytest.raises(FileExistsError):
            files.create_private(tmp_path / name)
    assert not (tmp_path / "elsewhere").exists()


def test_capped_reads_refuse_links_fifos_and_large_files(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"12345")
    (tmp_path / "big").write_bytes(b"x" * 100)
    (tmp_path / "link").symlink_to(tmp_path / "small")
    os.mkfifo(tmp_path / "fifo")
    assert files.read_capped(tmp_path / "small", 5) == b"12345"
    with pytest.raises(UnsafeFileError, match="larger"):
        files.read_capped(tmp_path / "big", 99)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        files.read_capped(tmp_path / "link", 100)
    outcome: list[str] = []

    def read_fifo() -> None:
        try:
            files.read_capped(tmp_path / "fifo", 10)
        except UnsafeFileError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert outcome and "not a regular file" in outcome[0]


def test_abandoned_run_directories_are_those_of_dead_owners_only(tmp_path: Path) -> None:
    def made(name: str, owner: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "owner.pid").write_text(owner)
        return path

    dead = made("run-dead", "999999999")
    made("run-alive", str(os.getpid()))
    made("run-garbage", "not a pid")
    made("other-dead", "999999999")
    (tmp_path / "run-link").symlink_to(dead)
    found = list(
        files.abandoned_run_directories(tmp_path, "run-", (os.geteuid(),), proc.process_exists)
    )
    assert found == [dead]
    assert (
        list(files.abandoned_run_directories(tmp_path, "run-", (54321,), proc.process_exists)) == []
    )


# -- proc --------------------------------------------------------------------------------------


def test_a_child_that_dies_with_its_parent_does(tmp_path: Path) -> None:
    """A parent process starts a child with die_with_parent, prints its pid, is SIGKILLed."""
    code = (
        "import subprocess, sys, time\n"
        "from sbtc_ops.proc import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '600'], preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    assert _wait_gone(child), "the child outlived its parent"


def test_signal_group_reaches_grandchildren() -> None:
    leader = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 600 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    proc.signal_group(leader, signal.SIGKILL)
    leader.wait()
    assert _wait_gone(grandchild)


def test_stop_escalates_to_sigkill() -> None:
    stubborn = subprocess.Popen(
        ["/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 600"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"  # TERM is ignored from here on
    assert proc.stop(stubborn, grace_s=0.5) == -signal.SIGKILL
    stubborn.stdout.close()


def test_run_interruptible_feeds_stdin_and_keeps_our_environment_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIGNER_SIGNER__PRIVATE_KEY", "secret")
    done = proc.run_interruptible(
        ["/bin/sh", "-c", "cat; env"], input_bytes=b"on the pipe\n", timeout_s=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith(b"on the pipe\n")
    assert b"secret" not in done.stdout


def test_run_interruptible_kills_the_group_at_the_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run_interruptible(
            ["/bin/sh", "-c", f"sleep 600 & echo $! > {pid_file}; wait"], timeout_s=5.0
        )
    assert _wait_gone(int(pid_file.read_text())), "the child's own child outlived the deadline"


def test_run_interruptible_stops_the_child_when_a_signal_handler_raises(tmp_path: Path) -> None:
    """The handler runs during the wait (as the CLI's SIGTERM handler does) and the child is
    killed and reaped before the exception reaches us."""
    marker = tmp_path / "started"

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    waiting = threading.Event()  # set once Popen has returned: the wait has begun

    def signal_once_started() -> None:
        waiting.wait(timeout=60)
        while not marker.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    threading.Thread(target=signal_once_started, daemon=True).start()
    try:
        with pytest.raises(Interrupted):
            proc.run_interruptible(
                ["/bin/sh", "-c", f"echo $$ > {marker}.pid; touch {marker}; exec sleep 600"],
                on_start=lambda _child: waiting.set(),
            )
    finally:
        signal.signal(signal.SIGUSR1, previous)
    child = int(Path(f"{marker}.pid").read_text())
    assert not _alive(child), "the child outlived the interruption"


def test_minimal_environment_holds_none_of_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNER_SIGNER__PRIVATE_KEY", "secret")
    monkeypatch.setenv("PGPASSWORD", "secret")
    env = proc.minimal_env({"PGHOST": "/run/x"})
    assert "SIGNER_SIGNER__PRIVATE_KEY" not in env and "PGPASSWORD" not in env
    assert env["PGHOST"] == "/run/x" and env["PATH"] == proc.SAFE_PATH


def test_background_work_returns_its_value_or_raises_its_error() -> None:
    assert proc.InBackground(lambda: 42).result() == 42

    def fails() -> int:
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        proc.InBackground(fails).result()
    slow = proc.InBackground(lambda: time.sleep(5))
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.05)


def test_process_exists() -> None:
    assert proc.process_exists(os.getpid())
    assert not proc.process_exists(999999999)


def test_streaming_child_feeds_stdin_collects_stderr_and_waits() -> None:
    script = (
        "import sys; data = sys.stdin.read(); sys.stdout.write(data.upper()); "
        "sys.stderr.write('note')"
    )
    argv = [sys.executable, "-c", script]
    with proc.streaming_child(argv, env=proc.minimal_env(), stdin_bytes=b"abc") as child:
        out = child.stdout.read()
    assert out == b"ABC"
    assert child.returncode == 0 and child.stderr == b"note"


def test_streaming_child_is_killed_and_reaped_when_the_body_fails() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(RuntimeError), proc.streaming_child(argv, env=proc.minimal_env()) as child:
        raise RuntimeError("the reader failed")
    assert child.proc.returncode is not None  # reaped, not left running
    assert not proc.process_exists(child.proc.pid)
