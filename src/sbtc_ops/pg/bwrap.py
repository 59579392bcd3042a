"""The bubblewrap command line: the mount view, namespaces and capabilities a sandbox gets,
and whether bubblewrap works here at all (the probe both the sandbox and the choice of the
sandbox user need: pg/sandbox.py, pg/runas.py).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sbtc_ops.proc import minimal_env

# The system part of every sandbox's view; everything else must be exposed by name.
SYSTEM_RO = ("/usr",)
# The view's own empty filesystems (inside the sandbox's mount namespace, not the host's).
VIEW_TMPFS = ("/tmp", "/run")  # noqa: S108
MERGED_USR_LINKS = {
    "/bin": "usr/bin",
    "/sbin": "usr/sbin",
    "/lib": "usr/lib",
    "/lib64": "usr/lib64",
}


def works(argv: Sequence[str]) -> str | None:
    """None when `argv` runs and exits 0, else why not (its last line of output)."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, timeout=20, check=False, env=minimal_env(), cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


@functools.lru_cache(maxsize=8)
def bwrap_problem(prefix: tuple[str, ...] = (), own_userns: bool = False) -> str | None:
    """None when bubblewrap can build a sandbox here (after `prefix`, e.g. the subordinate-id
    user namespace), else why not: not installed, or namespaces refused (a systemd unit's
    RestrictNamespaces=, Docker's default seccomp profile, a sysctl)."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None or setpriv is None:
        return "bubblewrap (bwrap) or setpriv is not installed"
    view = View(ro=(), rw=(), network=False, own_userns=own_userns)
    return works([*prefix, *view.bwrap_argv(bwrap, ()), "--", "/usr/bin/true"])


@functools.lru_cache(maxsize=1)
def _disable_userns_works() -> bool:
    """bwrap's --disable-userns (no nested user namespace) writes /proc/sys, which Docker
    mounts read-only: there the sandbox goes without it (seccomp still applies)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = [bwrap, "--unshare-user", "--disable-userns", "--ro-bind", "/usr", "/usr"]
    return works([*probe, *system_links(), "--", "/usr/bin/true"]) is None


def system_links() -> list[str]:
    """/bin, /lib… as on the host: links into /usr (merged /usr), else read-only binds."""
    argv: list[str] = []
    for link, target in MERGED_USR_LINKS.items():
        argv += (
            ["--symlink", target, link]
            if Path(link).is_symlink()
            else ["--ro-bind-try", link, link]
        )
    return argv


@dataclass(frozen=True)
class View:
    """The mount namespace bubblewrap builds: the system's /usr, the exposed paths (at the
    same paths as on the host, so that no path needs translating), nothing else."""

    ro: tuple[Path, ...]
    rw: tuple[Path, ...]
    network: bool
    own_userns: bool = False
    files: tuple[tuple[int, str], ...] = ()  # (fd, path): small generated files (/etc/passwd)
    die_with_parent: bool = True  # False only for a cluster kept for the operator

    def bwrap_argv(self, bwrap: str, chdir: Iterable[Path]) -> list[str]:
        argv = [bwrap, "--new-session"]
        if self.die_with_parent:
            argv.append("--die-with-parent")
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            argv.append("--unshare-net")
        if self.own_userns:
            argv.append("--unshare-user")
            if _disable_userns_works():
                argv.append("--disable-userns")
        else:
            # Root (or root of the subordinate-id namespace): keep only what setpriv needs
            # to drop to the sandbox user, and what --chdir needs to enter the sandbox
            # user's 0700 directory; the change of uid clears them all.
            argv += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"):
                argv += ["--cap-add", cap]
        for system in SYSTEM_RO:
            argv += ["--ro-bind", system, system]
        argv += system_links()
        # No /proc: a payload sees no process, and ld.so's $ORIGIN (which needs
        # /proc/self/exe) is replaced by LD_LIBRARY_PATH (Sandbox.env).
        argv += ["--dev", "/dev"]
        for tmpfs in VIEW_TMPFS:
            argv += ["--tmpfs", tmpfs]
        destinations = [*self.ro, *self.rw, *(Path(p) for _, p in self.files)]
        for directory in ancestors(destinations):
            argv += ["--perms", "0755", "--dir", str(directory)]
        for path in self.ro:
            argv += ["--ro-bind", str(path), str(path)]
        for path in self.rw:
            argv += ["--bind", str(path), str(path)]
        for fd, dest in self.files:
            argv += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
        for directory in chdir:
            argv += ["--chdir", str(directory)]
        return argv


def ancestors(paths: Iterable[Path]) -> list[Path]:
    """Every directory above `paths` that bubblewrap must create (0755 rather than under
    our umask), parents first, without the system part."""
    seen: dict[Path, None] = {}
    for path in paths:
        for parent in reversed(path.parents):
            if parent != Path("/") and str(parent) not in (*SYSTEM_RO, *VIEW_TMPFS, "/dev"):
                seen.setdefault(parent, None)
    return list(seen)
