"""Real faults of the host for the fault matrix (tests/test_fault_matrix.py).

- ENOSPC: a small tmpfs mounted for the test (`Tmpfs`).
- EIO: an ext4 filesystem on a loop device whose backing file is then cut short
  (`FaultyDisk.fail_beyond`): every block past the cut is "beyond the end of the device",
  so the kernel fails its I/O and the filesystem returns EIO, on writeback (fsync) and on
  reads of data not in the page cache (`evict`). No device-mapper (often absent in
  containers) and no FUSE needed. For reads, only the archive lives there, bind-mounted
  over its place in a healthy repository (`bind_file`): where ext4 puts a directory is
  not ours to choose, and a failing directory block reads as ENOMEM, not EIO.
- EPIPE: stdout a pipe whose reading end is closed before the program starts.
- signals: real signals to the process, sent while the child doing the work (pg_dump,
  pg_restore) is held with SIGSTOP, so the moment is deterministic.

Each needs root (mount, losetup); callers skip with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount)")


class Tmpfs:
    """A tmpfs of `size` mounted on a fresh short directory under /tmp (mode 0711, so the
    unprivileged PostgreSQL user may pass through)."""

    def __init__(self, size: str) -> None:
        need_root("a small tmpfs (ENOSPC)")
        self.path = Path(tempfile.mkdtemp(prefix="sf-", dir="/tmp"))
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(self.path))
        if done.returncode != 0:
            self.path.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def close(self) -> None:
        _run("umount", "-l", str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)


class FaultyDisk:
    """ext4 (no journal) on a loop device; `fail_beyond(n)` makes every byte past n fail."""

    SIZE = 96 << 20  # one block group (128 MiB at 4 KiB blocks): metadata all up front

    def __init__(self) -> None:
        need_root("a loop device (EIO)")
        self.base = Path(tempfile.mkdtemp(prefix="sf-eio-", dir="/tmp"))
        self.image = self.base / "disk.img"
        self.path = self.base / "mnt"
        self.path.mkdir()
        self.base.chmod(0o711)
        with self.image.open("wb") as handle:
            handle.truncate(self.SIZE)
        mkfs = _run(
            "mkfs.ext4", "-q", "-F", "-b", "4096", "-N", "1024", "-O", "^has_journal",
            "-E", "lazy_itable_init=0", str(self.image),
        )  # fmt: skip
        loop = _run("losetup", "--find", "--show", str(self.image))
        if mkfs.returncode != 0 or loop.returncode != 0:
            shutil.rmtree(self.base, ignore_errors=True)
            pytest.skip(f"no loop device here: {(mkfs.stderr + loop.stderr).strip()}")
        self.device = loop.stdout.strip()
        self._mount()

    def _mount(self) -> None:
        done = _run("mount", "-o", "errors=continue", self.device, str(self.path))
        if done.returncode != 0:
            self.close()
            pytest.skip(f"cannot mount a loop device here: {done.stderr.strip()}")
        self.path.chmod(0o711)
        self._allocate_forward()

    def _allocate_forward(self) -> None:
        """Every file's blocks from one goal that only moves forward (mballoc's stream
        allocation), so what is written next lands past what is already there. By default
        small files go to per-CPU preallocated chunks instead: a file written on another CPU
        could sit past `used_bytes()`, and `fail_beyond()` would cut it off (seen once in CI:
        the earlier backup of a fault case unreadable)."""
        tunable = Path("/sys/fs/ext4") / Path(self.device).name / "mb_stream_req"
        try:
            tunable.write_text("0\n")
        except OSError as exc:
            self.close()
            pytest.skip(f"cannot make ext4 allocate forward here ({tunable}): {exc}")

    def used_bytes(self) -> int:
        """Blocks in use now: what is written next lands past them (a fresh filesystem
        allocates forward)."""
        info = os.statvfs(self.path)
        return (info.f_blocks - info.f_bfree) * info.f_frsize

    def sync(self) -> None:
        """Write everything out (and allocate its blocks) now."""
        done = _run("sync", "--file-system", str(self.path))
        assert done.returncode == 0, done.stderr

    def fail_beyond(self, offset: int) -> None:
        """Cut the device at `offset`: I/O past it fails with EIO."""
        with self.image.open("r+b") as handle:
            handle.truncate(offset)
        done = _run("losetup", "--set-capacity", self.device)
        assert done.returncode == 0, done.stderr

    @staticmethod
    def evict(path: Path) -> None:
        """Drop a written-out file's pages from the page cache: its next read goes to the
        device (a mount again would refuse a filesystem larger than its device)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def close(self) -> None:
        _run("umount", "-l", str(self.path))
        _run("losetup", "-d", self.device)
        shutil.rmtree(self.base, ignore_errors=True)


def bind_file(source: Path, target: Path) -> Callable[[], None]:
    """Mount the file `source` over the file `target` (not a symlink: O_NOFOLLOW opens it);
    returns the undo."""
    done = _run("mount", "--bind", str(source), str(target))
    assert done.returncode == 0, done.stderr
    return lambda: _run("umount", "-l", str(target)) and None


def closed_pipe() -> int:
    """The writing end of a pipe whose reader is already gone (writes get EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(16):
        pid = _parent(pid)
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def working_descendant(ancestor: int, name: str) -> int | None:
    """A live descendant of `ancestor` running `name` that does the work (not a `--list`
    or `--version` probe); the sandbox puts it below an `unshare` and a namespace init."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if comm != name or b"--list" in argv or b"--version" in argv:
            continue
        if _descends(int(entry.name), ancestor):
            return int(entry.name)
    return None
