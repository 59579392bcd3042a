"""The private working directory of one verify or restore, and how archives get into it.

A backup's files are hostile input (docs/threat-model.md). Before anything reads them:

- only the files its manifest names are taken, each name checked (manifest.member_parts),
  each copied with no symlink followed, hashed *while copied*, so the bytes that are
  restored are exactly the bytes that were checked (no swap between check and use);
- everything lands in a staging directory of ours (0700; 0711 only when a sandbox without a
  mount view must pass through), with an owner.pid: a run killed with -9 leaves it behind,
  unreadable to anyone but us (the sandbox reached it through its own mount namespace, gone
  with it), and the next run removes it, decrypted archive included;
- only once checked is the archive handed to the sandbox user that restores it;
- under a drill's budget (`put_under`), a breach stops it all: the copy (checked between
  chunks, and never blocked on a pipe that trickles) and the decryption and decompression
  children, killed with the sandbox (verify/budget.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from sbtc_ops.backup.manifest import HASH_CHUNK, FileEntry, Manifest, member_parts
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.files import (
    PRIVATE_DIR_MODE,
    UnsafeFileError,
    abandoned_run_directories,
    confined_path,
    create_private,
    write_all,
)
from sbtc_ops.pg.limits import Limits
from sbtc_ops.pg.runas import RunAs
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.proc import process_exists

STAGING_PREFIXES = ("sbtc-ops-verify-", "sbtc-ops-restore-")
OWNER_FILE = "owner.pid"
ARCHIVE_DIR = "archive"
# How often a copy waiting on a pipe that sends nothing looks whether it was stopped.
POLL_MS = 100


class StagingError(SbtcOpsError):
    """A file could not be staged safely (symlink, special file, unsafe name, too large)."""


class StagingIOError(SbtcOpsError):
    """This host failed while staging (disk full, an I/O error): the backup may be fine, so
    it is no checksum problem, but the run cannot go on (exit 2)."""


class StagingStopped(SbtcOpsError):
    """Staging was stopped from outside: the drill went over its budget, or ended."""

    def __init__(self) -> None:
        super().__init__("staging was stopped (the drill went over its budget or ended)")


def _io_error(action: str, path: Path | str, exc: OSError) -> StagingIOError:
    return StagingIOError(f"cannot {action} {path}: {exc.strerror or exc}")


def _read_chunk(fd: int, source: Path | str, stop: threading.Event | None = None) -> bytes:
    """The next chunk; with `stop`, StagingStopped once it is set, even while the source (a
    pipe the operator named) sends nothing."""
    if stop is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(POLL_MS):  # a regular file is always ready
            if stop.is_set():
                raise StagingStopped
        if stop.is_set():
            raise StagingStopped
    try:
        return os.read(fd, HASH_CHUNK)
    except OSError as exc:
        raise _io_error("read", source, exc) from None


@dataclass
class Staging:
    """One run's staging directory; a context manager that removes it whatever happens."""

    run_as: RunAs
    prefix: str = "sbtc-ops-verify-"
    parent: Path | None = None
    root: Path = field(init=False)
    # Set to stop the copy, and kept for the children staging starts (put_under).
    stop: threading.Event = field(init=False, default_factory=threading.Event)
    limits: Limits | None = field(init=False, default=None)

    def __enter__(self) -> Self:
        parent = self.parent or Path(tempfile.gettempdir())
        reap_stale_staging(parent, self.run_as.remove_tree)
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix, dir=parent))  # 0700, ours
        if self._pass_through:
            self.root.chmod(0o711)  # the sandbox user may reach what is handed to it
        fd = create_private(self.root / OWNER_FILE)
        try:
            write_all(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        self.archive.mkdir(mode=PRIVATE_DIR_MODE)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.run_as.remove_tree(self.root)

    def put_under(self, limits: Limits) -> None:
        """Staging's children run under `limits` (rlimits, cgroup, killed with the sandbox),
        and a breach stops the copy too."""
        self.limits = limits
        limits.on_kill(self.stop.set)

    def sandbox(self) -> Sandbox:
        """Where staging's parsers (the decompressors) run: as the sandbox user, under the
        limits staging is under."""
        return Sandbox(self.run_as, limits=self.limits)

    def raise_if_stopped(self) -> None:
        if self.stop.is_set():
            raise StagingStopped

    @property
    def _pass_through(self) -> bool:
        """Whether the sandbox user must traverse our directories on the host (no mount view
        exposes what is handed over to it)."""
        return not self.run_as.is_current and not Sandbox(self.run_as).mount_view

    @property
    def archive(self) -> Path:
        return self.root / ARCHIVE_DIR

    def new_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=PRIVATE_DIR_MODE)
        return path

    def hand_over(self, path: Path) -> None:
        """Give a checked file or directory tree to the sandbox user (no link followed)."""
        if self.run_as.is_current:
            return
        self.run_as.chown_tree(path)
        if not self._pass_through:
            return
        # Our directories on the way may be passed through (not listed) by that user.
        for directory in path.parents:
            if directory == self.root or not directory.is_relative_to(self.root):
                break
            directory.chmod(0o711)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def reap_stale_staging(parent: Path, remove: Callable[[Path], None] = _rmtree) -> list[Path]:
    """Remove staging directories whose sbtc-ops process is gone (kill -9, power loss): a
    decrypted archive must not outlive the run that made it."""
    removed = []
    for prefix in STAGING_PREFIXES:
        for stale in abandoned_run_directories(parent, prefix, (os.geteuid(),), process_exists):
            remove(stale)
            removed.append(stale)
    return removed


# -- copying in --------------------------------------------------------------------------------


def _open_member(root: Path, parts: tuple[str, ...]) -> int:
    """Open root/parts… read-only, following no symlink below `root`, never blocking on a
    FIFO; the fd of a regular file or StagingError."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except OSError as exc:
                raise StagingError(f"{'/'.join(parts)}: {exc.strerror}") from None
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StagingError(f"{'/'.join(parts)}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StagingError(f"{'/'.join(parts)}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def copy_hashed(
    source_fd: int,
    target: Path,
    max_bytes: int,
    source: Path | str = "the backup",
    stop: threading.Event | None = None,
) -> tuple[str, int]:
    """Copy an open file into a new private file; (sha256, size) of the bytes copied. A
    fault of either side (an unreadable medium, a full disk) is a StagingIOError naming it;
    StagingStopped once `stop` is set."""
    digest = hashlib.sha256()
    size = 0
    try:
        out = create_private(target)
    except OSError as exc:
        raise _io_error("create", target, exc) from None
    try:
        while chunk := _read_chunk(source_fd, source, stop):
            size += len(chunk)
            if size > max_bytes:
                raise StagingError(f"{target.name}: larger than expected ({max_bytes} bytes)")
            digest.update(chunk)
            try:
                write_all(out, chunk)
            except OSError as exc:
                raise _io_error("write", target, exc) from None
    finally:
        os.close(out)
    return digest.hexdigest(), size


def hash_file(path: Path, stop: threading.Event | None = None) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := _read_chunk(fd, path, stop):
            size += len(chunk)
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _compare(entry: FileEntry, digest: str, size: int) -> str | None:
    if size != entry.size:
        return f"{entry.path}: size {size} bytes, manifest says {entry.size}"
    if digest != entry.sha256:
        return f"{entry.path}: SHA-256 {digest[:16]}… does not match the manifest"
    return None


def _listing_problems(entries: list[FileEntry]) -> list[str]:
    """A member listed twice, or listed both as a file and as a directory of other members."""
    seen: set[str] = set()
    problems = []
    for entry in entries:
        if entry.path in seen:
            problems.append(f"{entry.path}: listed more than once in the manifest")
        seen.add(entry.path)
    directories = {entry.path.rsplit("/", 1)[0] for entry in entries if "/" in entry.path}
    problems += [f"{name}: listed as a file and as a directory" for name in directories & seen]
    return problems


def stage_manifest_files(
    source_root: Path, manifest: Manifest, staging: Staging, *, in_place: bool
) -> list[str]:
    """Copy (or, for files already fetched into the staging directory, hash in place) every
    file the manifest names; the problems found, empty when all match."""
    problems = _listing_problems(manifest.files)
    if problems:  # a manifest that names one file twice was not written by a backup
        return problems
    for entry in manifest.files:
        problem = _stage_entry(source_root, entry, staging, in_place)
        if problem:
            problems.append(problem)
    return problems


def _stage_entry(
    source_root: Path, entry: FileEntry, staging: Staging, in_place: bool
) -> str | None:
    """Stage (or hash in place) one file of the manifest; the problem found, if any."""
    parts = member_parts(entry.path)
    try:
        if in_place:
            digest, size = hash_file(source_root.joinpath(*parts), staging.stop)
        else:
            target = confined_path(staging.archive, parts)
            fd = _open_member(source_root, parts)
            try:
                # A few bytes of slack: the size mismatch is then reported as such.
                digest, size = copy_hashed(
                    fd, target, entry.size + 1, source_root.joinpath(*parts), staging.stop
                )
            finally:
                os.close(fd)
    except FileNotFoundError:
        return f"{entry.path}: missing"
    except (StagingError, UnsafeFileError) as exc:
        return str(exc)
    except OSError as exc:  # e.g. a member is both a file and a directory
        return f"{entry.path}: {exc.strerror or exc}"
    return _compare(entry, digest, size)


def stage_unlisted(path: Path, staging: Staging) -> Path:
    """A dump the operator named, with no manifest: a file, or a directory-format dump (its
    regular files, one level). Copied as is; the operator chose it, so the path itself may
    be a symlink (or a pipe: `verify <(…)`), but nothing inside a directory is followed."""
    if path.is_dir():
        target = staging.archive / "dump.dir"
        target.mkdir(mode=PRIVATE_DIR_MODE)
        for child in sorted(path.iterdir()):
            if child.is_symlink() or not child.is_file():
                continue
            with contextlib.suppress(ValueError):
                member_parts(child.name)
                fd = _open_member(path, (child.name,))
                try:
                    copy_hashed(fd, target / child.name, 1 << 62, stop=staging.stop)
                finally:
                    os.close(fd)
        return target
    target = staging.archive / "dump"
    # Never blocked in open() by a FIFO without a writer (it then reads as empty).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.set_blocking(fd, True)
        copy_hashed(fd, target, 1 << 62, path, staging.stop)
    finally:
        os.close(fd)
    return target
