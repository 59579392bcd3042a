"""Child processes, once: children that die with their parent, process-group termination,
bounded stops, and background threads whose exceptions reach the waiting thread.

Everything that starts a program goes through these helpers, so "nothing outlives a run"
is implemented (and tested) in one place. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, Generic, TypeVar, cast

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc_prctl: Any = None

# What a program we start may inherit from our environment when it must not see our secrets
# (the signer's key, S3 and database passwords live in the environment of a service).
SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _prctl() -> Any:
    """libc's prctl, loaded in the parent: loading a library after fork() can deadlock."""
    global _libc_prctl
    if _libc_prctl is None:
        _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _libc_prctl


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `signum` when the thread that forked it dies.

    CPython runs preexec_fn after switching user/group, which matters: a credential change
    clears the parent-death signal. The parent-death signal follows the *thread* that
    started the child: start long-lived children from a thread that lives as long as they do.
    """
    prctl = _prctl()
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return preexec


def signal_group(proc: subprocess.Popen[Any], signum: int = signal.SIGKILL) -> None:
    """Signal the child's process group (its own children too), else the child itself.

    Children started with start_new_session=True lead their own group."""
    try:
        os.killpg(proc.pid, signum)
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen[Any], *, grace_s: float = 5.0, signum: int = signal.SIGTERM) -> int:
    """Ask the child's group to stop, SIGKILL it after `grace_s`, reap it; its exit status."""
    if proc.poll() is not None:
        return proc.returncode
    signal_group(proc, signum)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        return proc.wait()


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (someone else's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An allow-listed environment: locale and a standard PATH, nothing of ours (no secrets,
    no PG* redirections), plus `extra`."""
    env = {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}
    env["PATH"] = SAFE_PATH
    env.update(extra or {})
    return env


_INTERRUPT_PENDING = threading.Event()


def note_interrupt() -> None:
    """Called by the CLI's SIGINT/SIGTERM handler before it raises KeyboardInterrupt.

    A handler's exception is lost when the signal lands while Python runs code whose
    exceptions are "ignored" (an at-fork callback such as logging's, a __del__, a weakref
    callback): it is printed and swallowed, and a run blocked on a child that will never
    answer would then never stop. Places that block on a child check this first."""
    _INTERRUPT_PENDING.set()


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a signal asked for, once (cleanup after it runs on)."""
    if _INTERRUPT_PENDING.is_set():
        _INTERRUPT_PENDING.clear()
        raise KeyboardInterrupt


def wait_child(proc: subprocess.Popen[Any]) -> int:
    """`proc.wait()` in short slices, so an interrupt whose exception was lost still ends
    the wait (a stopped child is never reaped)."""
    while True:
        raise_if_interrupted()
        try:
            return proc.wait(0.2)
        except subprocess.TimeoutExpired:
            continue


class InBackground(Generic[T]):
    """`fn()` in a daemon thread; `result()` waits and re-raises its exception.

    For work that may simply die with the process (Ctrl-C must not wait for it)."""

    def __init__(self, fn: Callable[[], T], name: str = "background") -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> T:
        """Wait for it (forever when `timeout` is None, in short slices so that a signal
        handler of the main thread still runs) and return its value or raise its error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                break
            self._thread.join(left)
        if self._thread.is_alive():
            raise TimeoutError("background work still running")
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


def run_interruptible(
    argv: list[str],
    *,
    input_bytes: bytes = b"",
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a helper child of ours to completion and return what it printed (stdout unless
    `stdout` sends it elsewhere, e.g. a file; stderr always).

    For work that must not run in our own interpreter because it cannot be interrupted
    there (a C extension holding the GIL ignores Ctrl-C/SIGTERM until it returns). The wait
    is interruptible: when a signal handler raises, or `timeout_s` passes
    (subprocess.TimeoutExpired), the child's group is killed and reaped before the exception
    propagates. The child dies with us on kill -9, gets `input_bytes` on stdin (a pipe: the
    place for a secret, never argv or the environment) — or reads `stdin` (a file, another
    child's pipe) — and `env` (default: minimal_env()). `on_start` gets the child as soon as
    it runs (e.g. to let a budget's watchdog kill it from another thread)."""
    dies_with_us = die_with_parent()

    def preexec() -> None:
        dies_with_us()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)

    # Ctrl-C/SIGTERM are held while the child starts: raised inside Popen(), after the fork,
    # they would leave a child we hold no handle to (it would outlive our cleanup).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else minimal_env(),
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it
            preexec_fn=preexec,
        )
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held signal is handled here
        if on_start is not None:
            on_start(proc)
        out, err = proc.communicate(input_bytes if stdin is None else None, timeout=timeout_s)
    except BaseException:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out or b"", err)


def read_capped(stream: IO[bytes], max_bytes: int) -> tuple[bytes, bool]:
    """Read a child's output pipe until it closes, keeping at most `max_bytes`: (the bytes
    kept, whether there was more). Reading stops at the cap, so a child that prints without
    end costs no memory; the caller then kills it (its writes would block otherwise)."""
    fd = stream.fileno()
    kept = bytearray()
    while len(kept) <= max_bytes:
        chunk = os.read(fd, min(1 << 16, max_bytes + 1 - len(kept)))
        if not chunk:
            return bytes(kept), False
        kept += chunk
    return bytes(kept[:max_bytes]), True


class StreamingChild:
    """A child whose stdout the caller consumes while it runs (see `streaming_child`);
    `returncode` and `stderr` are set when the `with` block has waited for it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.returncode: int | None = None
        self.stderr = b""

    @property
    def stdout(self) -> IO[bytes]:
        if self.proc.stdout is None:
            raise ValueError("this child's stdout is not a pipe")
        return self.proc.stdout


@contextlib.contextmanager
def streaming_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin_bytes: bytes | None = None,
    pipe_stdout: bool = True,
    name: str = "child",
) -> Iterator[StreamingChild]:
    """Start `argv` (dying with us on kill -9), hand it `stdin_bytes` (the place for a
    secret: never argv or the environment) or nothing, collect its stderr in the background,
    and let the body read its stdout. On leaving the body the child is waited for
    (interruptibly); if the body raises, it is killed and reaped first."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL if stdin_bytes is None else subprocess.PIPE,
        stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
        preexec_fn=die_with_parent(),
    )
    child = StreamingChild(proc)
    try:
        assert proc.stderr is not None
        errors = InBackground(proc.stderr.read, name=f"{name}-stderr")
        if stdin_bytes is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin_bytes)
            proc.stdin.close()
        yield child
        child.returncode = wait_child(proc)
        child.stderr = errors.result()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
