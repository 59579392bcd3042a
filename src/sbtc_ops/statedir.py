"""One state directory per host, shared by the service and the administrator.

The daemon runs as the service user (`sbtc-ops`), an administrator runs the CLI as root
(or as a member of the service group): both must see the same history and take the same
locks, or a manual backup runs beside the daemon's and `sudo sbtc-ops history` shows
nothing. So:

- the default is the same for everyone: `$STATE_DIRECTORY` (what systemd's
  `StateDirectory=` sets), else `/var/lib/sbtc-ops` for root and for any user who may
  write there (the service user, a member of its group), else (a developer's own account)
  `$XDG_STATE_HOME/sbtc-ops`;
- what sbtc-ops creates inside it follows the directory: private (0600 files, 0700
  directories) in a private directory; group read-write (0660, 2770) in a directory its
  group may use (the unit's `StateDirectoryMode=2770`); and when root creates something in
  a directory another user owns, it is handed to that owner and group, so the service can
  still open the lock files and `state.db` root made. (SQLite gives `state.db-wal` and
  `-shm` the database file's owner and mode itself.)
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sbtc_ops.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

log = logging.getLogger(__name__)

SHARED_STATE_DIR = Path("/var/lib/sbtc-ops")


def default_state_dir(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    systemd = environ.get("STATE_DIRECTORY", "")
    if systemd:
        # systemd lists one path per StateDirectory= entry, colon-separated: ours is first.
        return Path(systemd.split(":")[0])
    if euid == 0 or _may_write(SHARED_STATE_DIR):
        return SHARED_STATE_DIR
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sbtc-ops"


def _may_write(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class Sharing:
    """How entries are created in one state directory."""

    file_mode: int
    dir_mode: int
    owner: tuple[int, int] | None  # (uid, gid) to hand root's creations to, else None


def sharing(state_dir: Path) -> Sharing:
    info = state_dir.stat()
    shared = bool(info.st_mode & stat.S_IRWXG)
    owner = None
    if os.geteuid() == 0 and info.st_uid != 0:
        owner = (info.st_uid, info.st_gid)
    # A state directory shared with a group (g+rwx) gets group-writable files and setgid
    # directories, so every member's runs can read and write them.
    if shared:
        return Sharing(0o660, 0o2770, owner)
    return Sharing(PRIVATE_FILE_MODE, PRIVATE_DIR_MODE, owner)


def ensure_state_dir(state_dir: Path) -> Sharing:
    """The state directory (created private when missing) and how to create inside it."""
    state_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return sharing(state_dir)


def make_state_subdir(state_dir: Path, name: str) -> Path:
    """`state_dir/name`, created as the state directory's sharing says."""
    how = ensure_state_dir(state_dir)
    path = state_dir / name
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        return path
    try:
        path.chmod(how.dir_mode)  # not left to the umask
    except PermissionError as exc:
        # systemd's RestrictSUIDSGID= refuses any chmod naming the setgid bit (the shipped
        # units make these directories themselves, StateDirectory=): ours to use as made,
        # only the group cannot.
        log.warning("%s keeps mode %o, not %o: %s", path, _mode(path), how.dir_mode, exc)
    if how.owner is not None:
        os.chown(path, *how.owner)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_state_file(state_dir: Path, path: Path, flags: int = os.O_RDWR) -> int:
    """Open (creating) a file under the state directory; an fd. A file we own gets the
    directory's mode (the umask does not decide); one root creates in another user's
    directory is handed to that user."""
    how = ensure_state_dir(state_dir)
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, how.file_mode)
    try:
        _adopt(fd, path, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _adopt(fd: int, path: Path, how: Sharing) -> None:
    """Give the file behind fd the state directory's mode and owner. fd may be an O_PATH
    one: its /proc link names this very file, so no path swapped in meanwhile is touched."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    via = f"/proc/self/fd/{fd}"
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != how.file_mode:
        Path(via).chmod(how.file_mode)
    if how.owner is not None and info.st_uid == 0:
        os.chown(via, *how.owner)


_DATABASE_PREPARATION = threading.Lock()


def prepare_database_file(state_dir: Path, path: Path) -> None:
    """Create a database file under the state directory, or give it the directory's mode and
    owner, before SQLite opens it, without ever closing an ordinary fd of it: closing any fd
    of a file drops every POSIX lock this process holds on it, SQLite's included. Another
    process's connection may then take the file for its last user and delete the WAL under
    ours ("disk I/O error"). An O_PATH fd holds no locks and closing it drops none."""
    how = ensure_state_dir(state_dir)
    # Serialised: no thread opens a connection while another creates the file.
    with _DATABASE_PREPARATION:
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            # Nothing in this process can hold a lock on a file that was not there.
            os.close(open_state_file(state_dir, path, os.O_RDONLY))
            return
        try:
            _adopt(fd, path, how)
        finally:
            os.close(fd)
