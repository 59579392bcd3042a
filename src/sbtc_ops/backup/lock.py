"""One backup at a time: an exclusive, non-blocking flock in the state directory.

The kernel releases it when the process dies, even by kill -9, so it never goes stale.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.statedir import open_state_file


class LockHeld(SbtcOpsError):
    """Another sbtc-ops process holds the lock."""


@contextmanager
def exclusive_lock(state_dir: Path, name: str) -> Iterator[None]:
    path = state_dir / f"{name}.lock"
    # Shared with the service user (sbtc_ops.statedir): a manual run and the daemon's
    # must exclude each other.
    fd = open_state_file(state_dir, path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(
                f"another {name} is already running (lock {path} is held); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def is_locked(state_dir: Path, name: str) -> bool:
    path = state_dir / f"{name}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # flock needs no write access
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
