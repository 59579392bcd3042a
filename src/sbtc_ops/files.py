"""Private files, once: complete-or-fail atomic writes, fsync, and reads that neither follow
symlinks nor block on special files nor read without bound.

sbtc-ops runs as root next to the signer's key and reads paths other users may control (a
cluster directory handed to the unprivileged server user, a backup location, an audited
tree). Every such write and read goes through here. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from sbtc_ops.errors import SbtcOpsError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class UnsafeFileError(SbtcOpsError):
    """A path is not the regular file it should be (a symlink, FIFO, device), or too big."""


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written: a short write (full disk, signal) is not done."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises instead on Linux
            raise OSError("write made no progress")
        view = view[written:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path, mode: int = PRIVATE_FILE_MODE) -> int:
    """A new file (O_EXCL: never an existing one, never through a symlink); its fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def write_private_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (0600), all or nothing: a fresh temporary file in the same
    directory, every byte written and fsynced, renamed over `path`, directory fsynced.

    On any failure the temporary file is removed and `path` is untouched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a killed run of ours with the same pid
    _replace_from_temp(tmp, create_private(tmp), path, data)


def write_synced(fd: int, data: bytes) -> None:
    """Write every byte to `fd`, fsync it and close it (closed whatever happens)."""
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_from_temp(tmp: Path, fd: int, path: Path, data: bytes) -> None:
    """Fill the new temporary file `tmp` (open as `fd`), rename it over `path`, fsync the
    directory; on any failure the temporary file is removed and `path` is untouched."""
    try:
        write_synced(fd, data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def open_regular(path: Path, *, dir_fd: int | None = None) -> int:
    """Open an existing regular file read-only without following a final symlink and without
    blocking on a FIFO; UnsafeFileError when it is anything but a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            raise UnsafeFileError(f"{path} is a symbolic link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_capped(path: Path, max_bytes: int, *, dir_fd: int | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see open_regular)."""
    fd = open_regular(path, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise UnsafeFileError(f"{path} is larger than {max_bytes} bytes")
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{path} is larger than {max_bytes} bytes")
    return data


def write_report_file(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace `path` with a fresh file holding `data` (mode 0600 by default), for reports a
    user names on the command line (`audit --html FILE`), possibly in a shared directory.

    The content goes to a new file with an unpredictable name in the same directory, created
    with O_EXCL|O_NOFOLLOW (never an existing file, never through a symlink), fsynced, then
    renamed over `path`: an existing file ends up with the new mode and content (not its old
    mode), and a symlink at `path` is replaced itself, its target never touched."""
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(21, "Is a directory", str(path))
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = create_private(tmp, mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 16 collisions of 64 random bits
        raise FileExistsError(17, "could not create a temporary file", str(path.parent))
    os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond `mode`
    _replace_from_temp(tmp, fd, path, data)


def confined_path(base: Path, parts: tuple[str, ...]) -> Path:
    """base/parts…, its parent directories created (0700), refusing (UnsafeFileError) a place
    that would resolve outside `base` (a checked name cannot, but the tree might hold a link);
    a symlink already at the place is removed, never written through."""
    destination = base.joinpath(*parts)
    destination.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if not destination.parent.resolve().is_relative_to(base.resolve()):
        raise UnsafeFileError(f"{'/'.join(parts)} would be written outside {base}")
    if destination.is_symlink():
        destination.unlink()
    return destination


def abandoned_run_directories(
    parent: Path, prefix: str, owners: tuple[int, ...], is_alive: Callable[[int], bool]
) -> Iterator[Path]:
    """Directories `parent/prefix*` a run of ours left behind: real directories (never a
    symlink) owned by one of `owners`, holding an `owner.pid` (read without following a link
    or blocking on a FIFO: it may have been planted) of a process that `is_alive` says is
    gone. Used to reap what a kill -9 or a power loss left."""
    for candidate in parent.glob(f"{prefix}*"):
        try:
            info = candidate.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
                continue
            owner = int(read_capped(candidate / "owner.pid", 64).decode().strip())
        except (OSError, ValueError, UnsafeFileError):
            continue
        if not is_alive(owner):
            yield candidate
