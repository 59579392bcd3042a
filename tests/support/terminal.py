"""Run `sbtc-ops` with stderr on a pseudo-terminal (as an operator's shell has it) and stdout
on a pipe, and collect what was drawn on the terminal."""

from __future__ import annotations

import contextlib
import os
import pty
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sbtc_ops.progress import descendants
from tests.support.backup import _argv, process_name, stopped
from tests.support.cli import clean_env, sbtc_ops_executable
from tests.support.proxy import LoopbackProxy

Hook = Callable[[subprocess.Popen[bytes]], None]


@dataclass
class TerminalRun:
    code: int
    stdout: str
    screen: str  # everything drawn on the terminal (stderr), escape sequences included


def run_on_terminal(
    *args: str,
    cwd: Path,
    state_dir: Path,
    env: dict[str, str] | None = None,
    while_running: Hook | None = None,
    timeout_s: float = 180,
) -> TerminalRun:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sbtc_ops_executable(), *args],
        cwd=cwd,
        env=clean_env(state_dir, {"TERM": "xterm", "COLUMNS": "150", **(env or {})}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    drawn = bytearray()

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once the process closed the terminal
            while chunk := os.read(controller, 65536):
                drawn.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        if while_running is not None:
            while_running(proc)
        stdout, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        reader.join(10)
        os.close(controller)
    return TerminalRun(proc.returncode, stdout.decode(), drawn.decode(errors="replace"))


def descendant_named(
    parent: subprocess.Popen[bytes], name: str, with_arg: str = "", timeout_s: float = 120
) -> int:
    """The pid of a process called `name` anywhere below `parent` (e.g. under runuser), with
    an argument starting with `with_arg` (not a `--version` probe)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in descendants(parent.pid):
            if process_name(pid) == name and any(a.startswith(with_arg) for a in _argv(pid)):
                return pid
        if parent.poll() is not None:
            raise AssertionError(f"sbtc-ops exited ({parent.returncode}) before {name} ran")
        time.sleep(0.005)
    raise AssertionError(f"no {name} below {parent.pid} within {timeout_s} s")


def hold(name: str, with_arg: str, seconds: float = 1.5) -> Hook:
    """While running: freeze the process `name` for a while, so the display (polled twice a
    second) is drawn at least once mid-way."""

    def freeze(proc: subprocess.Popen[bytes]) -> None:
        pid = descendant_named(proc, name, with_arg)
        with stopped(pid):
            threading.Event().wait(seconds)

    return freeze


class ThrottledProxy(LoopbackProxy):
    """A TCP proxy that passes bytes at about `bytes_per_s` each way, so a transfer to a
    loopback S3 server lasts long enough for its progress to be drawn."""

    def __init__(self, upstream_port: int, bytes_per_s: int) -> None:
        self.delay_per_byte = 1.0 / bytes_per_s
        super().__init__(upstream_port)

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pump(self, source: socket.socket, sink: socket.socket, towards_upstream: bool) -> None:
        try:
            while chunk := source.recv(16384):
                sink.sendall(chunk)
                if self._closed.wait(len(chunk) * self.delay_per_byte):
                    return
        except OSError:
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
