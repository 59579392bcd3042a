"""Progress and verbosity, both on stderr.

Progress (bytes or steps, elapsed time, ETA) is drawn only on a terminal and never with
--json, so logs, pipes and JSON consumers see none of it. All bars of a run share one live
display: a download inside `verify` is a second row under verify's steps, not a second,
conflicting display.

Verbosity (`-v`, `-vv`) is independent of the terminal: `-v` says each step and every command
run, `-vv` prefixes each line with the time since the start and says how long each step took.
Every verbose line goes through `scrub` (secrets never reach argv, but a message might quote
one), then above the live display if there is one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sbtc_ops.render import SafeConsole, format_size

Advance = Callable[[int], None]
POLL_INTERVAL_S = 0.5


@dataclass
class _State:
    verbosity: int = 0
    quiet: bool = False  # --json: no progress
    started: float = field(default_factory=time.monotonic)
    live: Progress | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    echo_installed: bool = False


_STATE = _State()


def configure(*, verbosity: int | None = None, quiet: bool | None = None) -> None:
    """Called by the CLI: the -v count, and quiet=True under --json."""
    if verbosity is not None:
        _STATE.verbosity = verbosity
        _STATE.started = time.monotonic()
    if quiet is not None:
        _STATE.quiet = quiet


def verbosity() -> int:
    return _STATE.verbosity


def shown() -> bool:
    """Whether progress is drawn: stderr is a terminal and the run is not --json."""
    return not _STATE.quiet and sys.stderr.isatty()


# -- verbose lines ----------------------------------------------------------------------------


def scrub(text: str) -> str:
    """Remove secrets from a line before it is shown: sbtc_ops.redact.scrub when that module
    exists (the secrets work adds it), else the line as it is."""
    scrubber = _scrubber()
    return text if scrubber is None else str(scrubber(text))


@functools.cache
def _scrubber() -> Callable[[str], object] | None:
    try:
        module = importlib.import_module("sbtc_ops.redact")
    except ImportError:
        return None
    found = getattr(module, "scrub", None)
    return found if callable(found) else None


def say(text: str, *, level: int = 1) -> None:
    """One verbose line on stderr, shown from `-v` (level 1) or `-vv` (level 2)."""
    if _STATE.verbosity >= level:
        echo(text)


def echo(text: str) -> None:
    """One line on stderr now, above the live display if there is one."""
    line = scrub(text)
    if _STATE.verbosity >= 2:
        line = f"[{time.monotonic() - _STATE.started:7.2f}s] {line}"
    with _STATE.lock:
        live = _STATE.live
    console = live.console if live is not None else SafeConsole(stderr=True, highlight=False)
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def step(name: str) -> Iterator[None]:
    """A named step: said at `-v` when it starts, with its duration at `-vv`."""
    say(f"{name}…")
    started = time.monotonic()
    try:
        yield
    finally:
        say(f"{name}: {time.monotonic() - started:.2f} s", level=2)


def echo_commands() -> None:
    """From now on, say every command this process starts (`-v`), via Python's audit hook
    for subprocess.Popen: one place that sees every caller's commands."""
    with _STATE.lock:
        if _STATE.echo_installed:
            return
        _STATE.echo_installed = True
    sys.addaudithook(_on_audit_event)


def _on_audit_event(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen" or _STATE.verbosity < 1:
        return
    try:
        argv = args[1]
        words = [argv] if isinstance(argv, str | bytes | os.PathLike) else list(argv)
        say("run: " + shlex.join(os.fsdecode(w) if not isinstance(w, str) else w for w in words))
    except Exception:  # noqa: BLE001, S110 (a display hook must never break the command)
        pass


class LineHandler(logging.Handler):
    """Log records as verbose lines (the same place and format as `say`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if _STATE.verbosity >= 2:  # for debugging: which logger, at which level
                message = f"{record.levelname} {record.name}: {message}"
            elif record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            echo(message)
        except Exception:  # noqa: BLE001
            self.handleError(record)


# -- the live display -------------------------------------------------------------------------


class _AmountColumn(ProgressColumn):
    """`12.0 MiB/45.0 MiB` for bytes, `3/8` for steps."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "steps":
            total = "?" if task.total is None else f"{task.total:.0f}"
            return Text(f"{task.completed:.0f}/{total}")
        done = format_size(task.completed)
        return Text(done if task.total is None else f"{done}/{format_size(task.total)}")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "steps" or not task.speed:
            return Text("")
        return Text(f"{format_size(task.speed)}/s")


def _columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=30),
        _AmountColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


@contextmanager
def _live() -> Iterator[Progress | None]:
    """The run's one live display (None when progress is not shown); nested users share it."""
    if not shown():
        yield None
        return
    with _STATE.lock:
        owner = _STATE.live is None
        if owner:
            _STATE.live = Progress(
                *_columns(), console=SafeConsole(stderr=True), transient=True, redirect_stdout=False
            )
            _STATE.live.start()
        progress = _STATE.live
    assert progress is not None
    try:
        yield progress
    finally:
        if owner:
            with _STATE.lock:
                _STATE.live = None
            progress.stop()


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Advance]:
    """Yields `advance(nbytes)`; thread-safe (boto3 calls it from worker threads)."""
    with _live() as progress:
        if progress is None:
            yield lambda _n: None
            return
        task = progress.add_task(description, total=total, unit="bytes")
        lock = threading.Lock()

        def advance(nbytes: int) -> None:
            with lock:
                progress.advance(task, nbytes)

        try:
            yield advance
        finally:
            progress.remove_task(task)


@contextmanager
def _polled(description: str, total: int | None, measure: Callable[[], int]) -> Iterator[None]:
    """A byte row whose value `measure()` gives, polled in the background."""
    with _live() as progress:
        if progress is None:
            yield
            return
        task = progress.add_task(description, total=total, unit="bytes")
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(POLL_INTERVAL_S):
                with contextlib.suppress(OSError):
                    done = measure()
                    progress.update(task, completed=min(done, total) if total else done)

        thread = threading.Thread(target=poll, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            progress.remove_task(task)


def watch_growth(description: str, path: Path, total: int | None = None) -> Any:
    """The growing size of a file or directory another process writes (e.g. pg_dump's
    output); `total`, when known or estimated, gives a bar and an ETA."""
    return _polled(description, total, lambda: path_size(path))


def watch_reads(description: str, pid: int, total: int | None) -> Any:
    """How much of its input a child process (and its own children, e.g. pg_restore's
    parallel workers) has read: the kernel's per-process read count (/proc/PID/io rchar)."""
    return _polled(description, total, lambda: tree_reads(pid))


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def tree_reads(pid: int) -> int:
    """Bytes read by `pid` and its live descendants; a reaped child's reads are already
    counted in its parent's."""
    return sum(_rchar(each) for each in [pid, *descendants(pid)])


def _rchar(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (via /proc/PID/task/TID/children)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                children = (task / "children").read_text().split()
                for child in map(int, children):
                    found.append(child)
                    pending.append(child)
    return found


# -- steps ------------------------------------------------------------------------------------


class StepProgress:
    """Item progress through the known steps of a job (verify's phases): a bar of steps done,
    elapsed time and ETA on a terminal; each step said at `-v`, its duration at `-vv`.

    `update(step)` marks the start of a step; `bytes(description, total)`
    adds a byte row under it for work whose size is known (a download, a restore)."""

    def __init__(self, name: str, steps: Sequence[str]) -> None:
        self.name = name
        self.steps = list(steps)
        self._done = 0
        self._current: tuple[str, float] | None = None
        self._stack = contextlib.ExitStack()
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        self._progress = self._stack.enter_context(_live())
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"{self.name}…", total=len(self.steps), unit="steps"
            )
        return self

    def update(self, step: str) -> None:
        self._finish_current()
        self._current = (step, time.monotonic())
        if step in self.steps:
            self._done = max(self._done, self.steps.index(step))
        say(f"{self.name}: {step}")
        if self._progress is not None:
            self._progress.update(
                self._task, completed=self._done, description=f"{self.name}: {step}"
            )

    def bytes(self, description: str, total: int | None = None) -> Any:
        return byte_progress(description, total)

    def _finish_current(self) -> None:
        if self._current is not None:
            step, started = self._current
            say(f"{self.name}: {step} took {time.monotonic() - started:.2f} s", level=2)
            self._current = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish_current()
        if self._progress is not None:
            self._progress.remove_task(self._task)
        self._stack.close()
