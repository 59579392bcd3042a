"""The process container for everything that touches a backup's contents.

The throwaway server and every client that reads an archive (pg_restore, psql, pg_amcheck,
decompressors) run through a Sandbox:

- as the unprivileged cluster user, never as root;
- with an allow-listed environment (proc.minimal_env): nothing of sbtc-ops' own environment,
  so the signer's key, S3 and database passwords are not in /proc/<pid>/environ;
- when sbtc-ops runs as root, in a PID namespace of their own (`unshare --pid --fork
  --kill-child`, then `setpriv` drops to the user): when the namespace's first process dies,
  the kernel kills every process in it, so a payload that detaches (`setsid … &`) cannot
  outlive the run. The `unshare` process itself dies with sbtc-ops (parent-death signal).
  Without root (or without util-linux), children run in a process group of their own that
  is killed as a whole.

Threat model and what each layer stops: docs/threat-model.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.pg.runas import RunAs
from sbtc_ops.proc import die_with_parent, minimal_env, signal_group


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether this process can put children in a PID namespace of their own (root with
    util-linux's unshare and setpriv, in a kernel or container that allows it)."""
    if os.geteuid() != 0:
        return False
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if unshare is None or setpriv is None:
        return False
    try:
        done = subprocess.run(
            [unshare, "--pid", "--fork", "--kill-child", "true"],
            capture_output=True,
            timeout=10,
            check=False,
            env=minimal_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _namespace_init(proc: subprocess.Popen[Any]) -> int:
    """The host pid of a contained child's namespace init (the child of `unshare`)."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        return proc.pid
    return int(children[0]) if children and children[0].isdigit() else proc.pid


@dataclass(frozen=True)
class Sandbox:
    """Runs programs as `run_as` with a minimal environment, contained as described above."""

    run_as: RunAs
    home: Path | None = None

    @property
    def contained(self) -> bool:
        """True when children get a PID namespace (root); else a process group."""
        return not self.run_as.is_current and namespaces_available()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = minimal_env({"LC_ALL": "C", "LANG": "C"})
        if self.home is not None:
            env["HOME"] = str(self.home)
        env.update(extra or {})
        return env

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped so that it runs contained, as the sandbox user."""
        if not self.contained:
            return list(argv)
        groups = ",".join(str(g) for g in self.run_as.groups)
        drop = [
            shutil.which("setpriv") or "setpriv",
            f"--reuid={self.run_as.uid}",
            f"--regid={self.run_as.gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--no-new-privs",
            "--",
        ]
        unshare = [shutil.which("unshare") or "unshare", "--pid", "--fork", "--kill-child"]
        # The namespace's first process stays root so that it keeps the parent-death signal
        # --kill-child gives it (a change of user clears it): a shell that starts the
        # program as the user and waits. When it dies, by any means, the namespace dies.
        # (A background job's stdin would be /dev/null: hand it ours through fd 3.)
        init = ["/bin/sh", "-c", 'exec 3<&0; "$@" 0<&3 3<&- & exec 3<&-; wait $!', "sandbox"]
        return [*unshare, "--", *init, *drop, *argv]

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        die_with_us: bool = True,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start `argv` in the sandbox. The child leads a new session (Ctrl-C reaches us, and
        we stop it in order); with `die_with_us` the kernel kills it if we die."""
        user_switch: dict[str, Any] = {} if self.contained else self.run_as.popen_kwargs()
        return subprocess.Popen(
            self.argv(argv),
            env=self.env(env),
            start_new_session=True,
            preexec_fn=die_with_parent() if die_with_us else None,
            **user_switch,
            **kwargs,
        )

    def main_pid(self, proc: subprocess.Popen[Any]) -> int:
        """The host pid of the program itself (inside the namespace, the child of unshare)."""
        if not self.contained:
            return proc.pid
        pid = proc.pid
        for _level in ("namespace init", "program"):  # unshare → init shell → program
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
        try:
            out, err = proc.communicate(input_bytes, timeout=timeout_s)
        except BaseException:
            self.kill(proc)
            proc.wait()
            raise
        self.sweep(proc)
        return subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
