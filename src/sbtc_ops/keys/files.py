"""Private output files for cold backups: a 0700 directory, 0600 files, written atomically
and never over an existing file (a second backup must not destroy the first)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from sbtc_ops.errors import UsageError
from sbtc_ops.files import PRIVATE_DIR_MODE, create_private, fsync_dir, write_synced


def prepare_private_dir(path: Path) -> None:
    """Create `path` 0700, or accept an existing directory only if nobody else can enter it."""
    if not path.exists():
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
        except OSError as exc:
            raise UsageError(f"cannot create {path}: {exc.strerror}") from None
        return
    if not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UsageError(
            f"{path} is open to other users (mode {mode:04o})",
            hint=f"use a new directory (sbtc-ops creates it 0700) or run: chmod 700 {path}",
        )


def write_new_private_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file `path` (0600): temporary name, fsync, hard link into place
    (fails if `path` exists), fsync the directory. The temporary file holds the same
    non-secret bytes (ciphertext, a share, metadata) and is always removed."""
    if path.exists():
        raise UsageError(f"{path} already exists; sbtc-ops never overwrites a backup")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = create_private(tmp)
    try:
        write_synced(fd, data)
        _link_into_place(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} already exists; sbtc-ops never overwrites a backup") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _link_into_place(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        # Filesystems without hard links (vfat on a USB stick): rename after a last check.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        if path.exists():
            raise FileExistsError(path) from None
        tmp.rename(path)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
