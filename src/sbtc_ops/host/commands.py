"""How the host layer runs host commands: the subprocess runner (timeouts, group kills), and the
recorded and offline runners tests and --root audits use."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sbtc_ops.host.errors import CommandTimeout, ToolMissing
from sbtc_ops.proc import signal_group

log = logging.getLogger(__name__)


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error_line(self) -> str:
        text = (self.stderr or self.stdout).strip()
        return text.splitlines()[0][:200] if text else f"exit status {self.returncode}"


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands on this host, optionally inside a prefix such as `ip netns exec NS`.

    Children run in their own session so a timeout kills the whole process group; output is
    decoded leniently (garbage bytes never crash a check); the locale is C so output parses.
    """

    def __init__(self, prefix: Sequence[str] = (), path_prepend: Sequence[Path] = ()) -> None:
        self.prefix = tuple(prefix)
        self.env = dict(os.environ, LC_ALL="C", LANG="C")
        self._live: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        if path_prepend:
            joined = os.pathsep.join(str(p) for p in path_prepend)
            self.env["PATH"] = f"{joined}{os.pathsep}{self.env.get('PATH', '')}"

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise ToolMissing(f"{argv[0]} is not installed")
        full = [*self.prefix, *argv]
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ToolMissing(f"cannot run {argv[0]}: {exc.strerror}") from None
        with self._lock:
            self._live.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(
                f"`{' '.join(argv)}` did not finish within {timeout:g}s (killed)"
            ) from None
        finally:
            with self._lock:
                self._live.discard(proc)
        return CommandResult(
            tuple(argv),
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    def kill_all(self) -> None:
        """Kill commands still running (a check abandoned at its timeout, an interrupt)."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            # Signal only: the thread waiting in communicate() reaps it (two readers of the
            # same pipes would race).
            _signal_group(proc)


def _signal_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group (its children too), else the command itself."""
    signal_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc)
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        log.warning("process %s did not die after SIGKILL", proc.pid)


class RecordedRunner:
    """Replays recorded outputs, for tests and for auditing evidence collected elsewhere.

    Keys are the command line joined with single spaces. A value is the stdout text, a
    CommandResult, or a callable taking (argv, timeout). Commands not recorded behave as
    missing tools.
    """

    def __init__(
        self,
        outputs: Mapping[
            str, str | CommandResult | Callable[[Sequence[str], float], CommandResult]
        ],
    ) -> None:
        self.outputs = dict(outputs)
        self.calls: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        with self._lock:
            self.calls.append(tuple(argv))
        value = self.outputs.get(" ".join(argv))
        if value is None:
            raise ToolMissing(f"{argv[0]} is not installed")
        if isinstance(value, str):
            return CommandResult(tuple(argv), 0, value)
        if isinstance(value, CommandResult):
            return value
        return value(argv, timeout)


class OfflineRunner:
    """For --root audits of a mounted image: this host's commands would describe this host."""

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        raise ToolMissing(f"`{argv[0]}` is not run when auditing a directory tree (--root)")
