"""The sandbox user namespace root prepares for an unprivileged service.

An unprivileged service cannot give its children another kernel uid by itself: newuidmap is
setuid, and the shipped systemd unit and compose service run with NoNewPrivileges. So root
does it once, before the service starts (`sbtc-ops sandbox-userns`, from the unit's
`ExecStartPre=+` or the compose service's entrypoint): a user namespace owned by the service
user that maps exactly two ids, 0 → the service user and 1 → a dedicated sandbox user. The
service joins it (nsenter; as its owner it may) and runs every program that reads an archive
as uid 1 there, i.e. as the sandbox user (pg/sandbox.py, mode bwrap-sandbox-user).

What that grants the service: inside the namespace it holds capabilities over files the
sandbox user or group own, and may become that user. So the sandbox user must own nothing
else (a fresh system user). It grants nothing over root's files, other users' or the host.

The namespace lives as long as something refers to it: a bind mount of its nsfs file (the
unit; `--release` removes it) or the holder process the service inherits (`--exec`, compose;
a root-owned symlink names it to `docker compose exec` runs too).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from sbtc_ops.errors import ConfigError, DependencyError, SbtcOpsError
from sbtc_ops.pg.runas import SANDBOX_USERNS_ENV

NAMESPACE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Ids:
    """A user's uid and primary gid, as given on the command line."""

    uid: int
    gid: int
    label: str


def parse_ids(value: str, what: str) -> Ids:
    """`NAME`, `UID` or `UID:GID`; never root."""
    name, _, group = value.partition(":")
    try:
        if name.isdigit():
            uid = int(name)
            gid = int(group) if group else _primary_gid(uid)
        else:
            entry = pwd.getpwnam(name)
            uid, gid = entry.pw_uid, int(group) if group else entry.pw_gid
    except (KeyError, ValueError):
        raise ConfigError(f"{what} {value!r}: no such user (NAME, UID or UID:GID)") from None
    if uid == 0 or gid == 0:
        raise ConfigError(f"{what} {value!r} is root: it must be an unprivileged user")
    return Ids(uid, gid, value)


def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid  # a bare uid in a container image: its group of the same number


def check_pair(service: Ids, sandbox: Ids) -> None:
    if service.uid == sandbox.uid or service.gid == sandbox.gid:
        raise ConfigError(
            f"the sandbox user ({sandbox.label}) must have a uid and gid other than the "
            f"service's ({service.label})"
        )


@dataclass
class Holder:
    """The process that holds the namespace: a child of ours, forked as root, that became
    the service user and unshared a user namespace. Until told, it waits; `release` lets it
    exit, `proceed` makes it sleep for good (it dies with its parent: parent-death signal).

    Why a fork and not setpriv + unshare: a container's root has only SETUID and SETGID, so
    it may neither signal nor inspect another user's process."""

    pid: int
    go: int  # write end: b"G" = sleep for good; closed without it = exit

    def proceed(self) -> None:
        os.write(self.go, b"G")
        os.close(self.go)

    def release(self) -> None:
        os.close(self.go)
        os.waitpid(self.pid, 0)


_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_CAP_SETGID, _CAP_SETUID = 6, 7
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def start_holder(service: Ids, sandbox: Ids) -> Holder:
    """A process, running as the service user, in a new user namespace mapped 0 → service,
    1 → sandbox."""
    if os.geteuid() != 0:
        raise SbtcOpsError("sandbox-userns must run as root (the unit's ExecStartPre=+)")
    sleep = shutil.which("sleep")
    if sleep is None:
        raise DependencyError("sleep not found (Debian: coreutils)")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its effects are what the tests check
        os.close(ready_r)
        os.close(go_w)
        _become_holder(service, parent, ready_w, go_r, sleep)
    os.close(ready_w)
    os.close(go_r)
    holder = Holder(pid, go_w)
    try:
        _await_ready(ready_r)
        _write_maps_as_owner(pid, service, sandbox)
    except BaseException:
        holder.release()
        raise
    finally:
        os.close(ready_r)
    return holder


def _become_holder(service: Ids, parent: int, ready: int, go: int, sleep: str) -> NoReturn:
    """In the forked child: only system calls, then exec or _exit, never back to Python's
    caller."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        os.setgroups([])
        os.setresgid(service.gid, service.gid, service.gid)
        os.setresuid(service.uid, service.uid, service.uid)
        # After the change of ids (which clears both): die with the parent, even by kill -9;
        # and stay dumpable, so that our /proc files are the service user's (the map writer's
        # and, in compose, the service's way to the namespace).
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
        if libc.unshare(_CLONE_NEWUSER) != 0:
            os.write(ready, f"E{os.strerror(ctypes.get_errno())}".encode())
            os._exit(1)
        os.write(ready, b"R")
        if os.read(go, 1) != b"G":
            os._exit(0)
        os.close(ready)
        os.close(go)
        os.execv(sleep, [sleep, "infinity"])  # noqa: S606 - coreutils sleep, found above
    except BaseException:  # noqa: BLE001 - a forked child never unwinds into the parent's code
        os._exit(1)


def _await_ready(ready: int) -> None:
    readable, _, _ = select.select([ready], [], [], NAMESPACE_TIMEOUT_S)
    answer = os.read(ready, 256) if readable else b""
    if answer == b"R":
        return
    if answer.startswith(b"E"):
        why = answer[1:].decode(errors="replace")
        raise DependencyError(f"cannot create the user namespace: {why}")
    raise DependencyError("the user namespace's holder did not start")


def _write_maps_as_owner(pid: int, service: Ids, sandbox: Ids) -> None:
    """Write the holder's uid_map and gid_map, as the kernel allows it for a map of ids other
    than the writer's own: the writer must hold CAP_SYS_ADMIN over the new namespace (its
    owner does) and CAP_SETUID/CAP_SETGID where the namespace was made (root does). So a
    forked writer keeps root's capabilities but takes the service's effective uid (what
    newuidmap does with its file capabilities); root itself may lack CAP_SYS_ADMIN (the
    compose service)."""
    report_r, report_w = os.pipe()
    writer = os.fork()
    if writer == 0:  # pragma: no cover - the child; the maps it writes are what tests check
        os.close(report_r)
        try:
            _become_map_writer(service.uid)
            _write_map(pid, "uid_map", service.uid, sandbox.uid)
            _write_map(pid, "gid_map", service.gid, sandbox.gid)
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            os.write(report_w, str(exc).encode()[:300])
            os._exit(1)
    os.close(report_w)
    try:
        why = os.read(report_r, 512).decode(errors="replace")
    finally:
        os.close(report_r)
    _, status = os.waitpid(writer, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise DependencyError(why or "the id map writer failed")


def _become_map_writer(owner_uid: int) -> None:
    """Effective uid: the namespace's owner; effective capabilities: SETUID and SETGID (the
    permitted set survives, the real and saved uids stay root's)."""
    os.setresuid(0, owner_uid, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    wanted = (1 << _CAP_SETUID) | (1 << _CAP_SETGID)
    if data[0].permitted & wanted != wanted:
        raise DependencyError("root lacks CAP_SETUID or CAP_SETGID")
    data[0].effective, data[1].effective = wanted, 0
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _write_map(pid: int, name: str, service_id: int, sandbox_id: int) -> None:
    # One write(2): the kernel takes a map only whole, and only once.
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, f"0 {service_id} 1\n1 {sandbox_id} 1\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise DependencyError(f"cannot write the namespace's {name}: {exc.strerror}") from None


def keep_at(service: Ids, sandbox: Ids, path: Path) -> None:
    """Create the namespace and keep it at `path` (a bind mount of its nsfs file), in a
    directory only root may write: mount(2) follows a symlink, and one swapped in by another
    user would turn our bind mount onto a file of root's choosing."""
    check_pair(service, sandbox)
    try:
        path.parent.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path.parent}: {exc.strerror}") from None
    _check_root_directory(path.parent, "the namespace's")
    # The service must reach the namespace: not left to the umask (the units' UMask=0077
    # applies to their ExecStartPre=+ too, which would make it root's alone).
    path.parent.chmod(0o755)
    release(path)  # a stale one from a crashed start
    holder = start_holder(service, sandbox)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        os.close(fd)
        _run(["mount", "--bind", f"/proc/{holder.pid}/ns/user", str(path)])
    finally:
        holder.release()


def release(path: Path) -> None:
    """Unmount and remove what keep_at() made (nothing to do when it is not there)."""
    if not os.path.lexists(path):
        return
    if os.path.ismount(path):
        _run(["umount", str(path)])
    path.unlink()


def exec_as_service(service: Ids, sandbox: Ids, argv: Sequence[str]) -> None:
    """Create the namespace, then become the service user running `argv`. The namespace is
    kept by its holder, our child (it dies with the service), and named to the service by
    $SBTC_OPS_SANDBOX_USERNS: when the environment already sets it (the compose file does,
    so that `docker compose exec` runs find it too), a root-owned symlink there to the
    holder's namespace; else the holder's /proc path itself."""
    check_pair(service, sandbox)
    if not argv:
        raise ConfigError("--exec needs a command to run as the service user")
    env = dict(os.environ)
    if os.geteuid() != 0:
        # An image started without root (plain `docker run`): no namespace, the drill says so.
        print(
            "note: sandbox-userns: not root, so no sandbox user namespace; the restore "
            "drill runs without a uid of its own",
            file=sys.stderr,
        )
        os.execvpe(argv[0], list(argv), env)  # noqa: S606 - the entrypoint's own argv
    named = env.get(SANDBOX_USERNS_ENV, "")
    if named:
        _check_root_directory(Path(named).parent, f"{SANDBOX_USERNS_ENV}'s link")
    holder = start_holder(service, sandbox)
    target = f"/proc/{holder.pid}/ns/user"
    try:
        if named:
            _link(Path(named), target)
        else:
            env[SANDBOX_USERNS_ENV] = target
    except BaseException:
        holder.release()
        raise
    holder.proceed()
    setpriv = shutil.which("setpriv") or "setpriv"
    drop = [f"--reuid={service.uid}", f"--regid={service.gid}", "--clear-groups"]
    os.execve(setpriv, [setpriv, *drop, "--inh-caps=-all", "--", *argv], env)  # noqa: S606


def _check_root_directory(directory: Path, holds: str) -> None:
    """Only root may write `directory` (and so replace what we put there)."""
    try:
        info = directory.lstat()
    except OSError as exc:
        raise ConfigError(f"{directory} (for {holds} file): {exc.strerror}") from None
    if info.st_uid != 0 or info.st_mode & 0o022 or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{directory} must be a directory of root's that no one else may write "
            f"(it holds {holds} file)"
        )


def _link(path: Path, target: str) -> None:
    if os.path.lexists(path):
        path.unlink()
    path.symlink_to(target)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, check=False, timeout=60, cwd="/")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise DependencyError(f"{' '.join(argv[:2])} failed: {why[0]}")
