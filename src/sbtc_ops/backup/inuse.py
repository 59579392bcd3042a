"""Per-backup locks across processes, so no job pulls a backup from under another.

A verify or a restore holds a *shared* lock on the backup it reads for as long as it reads
it; prune takes an *exclusive*, non-blocking lock before deleting one and keeps (skips) a
backup someone holds, saying so. The locks are flock(2) on files in the state directory's
`locks/` directory, one per (location, backup id): the kernel releases them when the holder
dies, even by kill -9, so they never go stale. The lock files themselves are tiny and are
left in place (removing one could race with a process about to lock it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.statedir import make_state_subdir, open_state_file

if TYPE_CHECKING:
    from sbtc_ops.backup.archive import LocatedBackup
    from sbtc_ops.backup.storage import Storage

LOCKS_DIR = "locks"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def lock_path(state_dir: Path, location: str, backup_id: str) -> Path:
    """locks/<backup id>@<hash of the location>.lock: readable names, no path tricks. A
    local location is keyed by its resolved path, however it was spelled."""
    if "://" not in location:
        location = str(Path(location).resolve())
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    return state_dir / LOCKS_DIR / f"{_SAFE.sub('_', backup_id)[:80]}@{digest}.lock"


def _open(state_dir: Path, location: str, backup_id: str) -> int:
    make_state_subdir(state_dir, LOCKS_DIR)
    return open_state_file(state_dir, lock_path(state_dir, location, backup_id))


@contextmanager
def reading(state_dir: Path, location: str, backup_id: str) -> Iterator[None]:
    """Shared: the backup is being read (verify, restore). Waits while a prune deletes it;
    the reader then finds it gone and says so."""
    fd = _open(state_dir, location, backup_id)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def reading_all(state_dir: Path, keys: list[tuple[str, str]]) -> Iterator[None]:
    """Shared locks on several (location, backup id) pairs, in a fixed order."""
    with ExitStack() as stack:
        for location, backup_id in sorted(set(keys)):
            stack.enter_context(reading(state_dir, location, backup_id))
        yield


@contextmanager
def deleting(state_dir: Path, location: str, backup_id: str) -> Iterator[bool]:
    """Exclusive, non-blocking: yields False (and deletes nothing) when a reader holds it."""
    fd = _open(state_dir, location, backup_id)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def hold_by_id(stack: ExitStack, state_dir: Path, storages: list[Storage], ref: str) -> None:
    """Before locating backup `ref` by id: hold it in every location it may come from, so
    no prune deletes it between the listing and the reading."""
    stack.enter_context(reading_all(state_dir, [(s.name, ref) for s in storages]))


def hold_located(stack: ExitStack, state_dir: Path, located: LocatedBackup) -> None:
    """Hold a located backup (found by --latest or by path) and check it is still there: a
    prune may have deleted it just before the lock was taken."""
    if located.backup_id is None:
        return  # any pg_dump file: no repository, no prune
    location = located.storage or str(located.root.parent)
    stack.enter_context(reading(state_dir, location, located.backup_id))
    # A prune deletes while holding the exclusive lock, so once ours is granted the backup
    # is either whole or gone.
    if not located.root.exists():
        raise SbtcOpsError(
            f"backup {located.backup_id} was deleted (pruned) just as it was located; "
            "nothing was read",
            hint="run the command again: it picks a backup that exists",
        )
