"""Budgets on what a sandboxed program may consume: memory, processes, disk and time.

Mechanism only (what the numbers are is verify/budget.py's business):

- `Limits` is what a `Sandbox` applies to every child it starts (the hook is
  `Sandbox.limits`): per-process rlimits (address space, file size, no core dumps; the
  number of processes when no pids cgroup is available) set in the child before it runs,
  and membership of the drill's cgroup, entered by the child itself before exec so that
  nothing it forks escapes it. It also keeps every child started, so that a breach kills
  them all (whole container: `Sandbox.kill`).
- `Cgroups` is the drill's cgroup: cgroup v2 when `/sys/fs/cgroup` is the unified hierarchy
  and our cgroup delegates the memory and pids controllers to us; else cgroup v1 when its
  memory and pids hierarchies are writable; else none (rlimits only). `layer` says which.
- `Watchdog` is a thread that measures, every ~50 ms, the disk our own directories use
  (allocated blocks, so sparse files and internal compression count at their real size),
  the free space of their volumes, the clock, and the cgroup's OOM kills and refused forks;
  on the first breach it records it and kills every tracked child.

RLIMIT_NPROC, the fallback for processes, counts every process of the user, not only the
sandbox's: it is set to the budget plus what that user already runs (docs/threat-model.md).
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "sbtc-ops-"
TICK_S = 0.05
WALK_EVERY_S = 2.0
_KILL_ROUNDS = 50


@dataclass(frozen=True)
class Breach:
    """The first budget a drill exceeded: which resource, by how much, and why in words."""

    resource: str  # disk, memory, processes, time
    detail: str
    limit: float
    used: float


@dataclass(frozen=True)
class ProcessLimits:
    memory_bytes: int  # the cgroup's memory limit, and each process's address space
    pids: int  # the cgroup's pids.max (or RLIMIT_NPROC above what the user already runs)
    file_bytes: int  # the largest file one process may write (RLIMIT_FSIZE)


# -- cgroups ------------------------------------------------------------------------------------


def _own_cgroup(controller: str | None) -> str | None:
    """Our cgroup path in the hierarchy of `controller` (None: the unified hierarchy)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if controller is None and parts[0] == "0" and parts[1] == "":
            return parts[2]
        if controller is not None and controller in parts[1].split(","):
            return parts[2]
    return None


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_keyed(path: Path, key: str) -> int:
    """The number after `key` in a flat-keyed cgroup file (memory.events, pids.events…)."""
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _reap_stale(parent: Path) -> None:
    """Remove empty cgroups of ours whose sbtc-ops died (kill -9): the kernel emptied them."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if not entry.name.startswith(CGROUP_PREFIX):
                continue
            owner = entry.name.removeprefix(CGROUP_PREFIX).split("-", 1)[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    entry.rmdir()


def cgroups_of(pid: int) -> list[Path]:
    """The drill cgroups process `pid` made next to our own (tests: nothing may be left)."""
    parents = [CGROUP_ROOT / (_own_cgroup(None) or "/").lstrip("/")]
    for controller in ("memory", "pids"):
        own = _own_cgroup(controller)
        if own is not None:
            parents.append(CGROUP_ROOT / controller / own.lstrip("/"))
    prefix = f"{CGROUP_PREFIX}{pid}-"
    found = []
    for parent in parents:
        with contextlib.suppress(OSError):
            found += [entry for entry in parent.iterdir() if entry.name.startswith(prefix)]
    return found


def _make_child(parent: Path) -> Path:
    _reap_stale(parent)
    child = parent / f"{CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    child.mkdir()
    return child


@dataclass
class Cgroups:
    """The cgroup directories of one drill (one per hierarchy: two under v1, one under v2)."""

    layer: str  # "cgroup v2", "cgroup v1", "none"
    memory: Path | None = None
    pids: Path | None = None
    _fds: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, limits: ProcessLimits) -> Cgroups:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return _create_v2(limits)
        return _create_v1(limits)

    @property
    def version(self) -> int:
        return 2 if self.layer == "cgroup v2" else 1

    def procs_fds(self) -> list[int]:
        """cgroup.procs of each directory, opened here by us: the child writes "0" to them
        (itself) before exec, so whatever it starts is born inside."""
        if not self._fds:
            for directory in self.directories():
                self._fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        return self._fds

    def directories(self) -> list[Path]:
        unique = []
        for directory in (self.memory, self.pids):
            if directory is not None and directory not in unique:
                unique.append(directory)
        return unique

    def oom_kills(self) -> int:
        if self.memory is None:
            return 0
        if self.version == 2:
            return _read_keyed(self.memory / "memory.events", "oom_kill")
        return _read_keyed(self.memory / "memory.oom_control", "oom_kill")

    def memory_peak(self) -> int | None:
        if self.memory is None:
            return None
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _read_int(self.memory / name)

    def refused_forks(self) -> int:
        return _read_keyed(self.pids / "pids.events", "max") if self.pids is not None else 0

    def pids_current(self) -> int | None:
        return _read_int(self.pids / "pids.current") if self.pids is not None else None

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroups until they are empty (a forking payload is
        bounded by pids.max, so this ends)."""
        for directory in self.directories():
            if self.version == 2 and (directory / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(directory / "cgroup.kill", "1")
            for _round in range(_KILL_ROUNDS):
                try:
                    pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
                except (OSError, ValueError):
                    break
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)

    def remove(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self.kill_all()
        for directory in self.directories():
            for _round in range(_KILL_ROUNDS):  # the last processes may still be exiting
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _create_v2(limits: ProcessLimits) -> Cgroups:
    own = _own_cgroup(None)
    if own is None:
        return Cgroups("none")
    parent = CGROUP_ROOT / own.lstrip("/")
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        if not {"memory", "pids"} <= set(enabled):
            # Fails (EBUSY) when our cgroup holds processes, e.g. an undelegated service.
            _write(parent / "cgroup.subtree_control", "+memory +pids")
        child = _make_child(parent)
    except OSError:
        return Cgroups("none")
    try:
        _write(child / "memory.max", str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # no swap: the budget is memory, not memory+swap
            _write(child / "memory.swap.max", "0")
        _write(child / "pids.max", str(limits.pids))
    except OSError:
        with contextlib.suppress(OSError):
            child.rmdir()
        return Cgroups("none")
    return Cgroups("cgroup v2", memory=child, pids=child)


def _create_v1(limits: ProcessLimits) -> Cgroups:
    made: dict[str, Path] = {}
    settings = {
        "memory": [("memory.limit_in_bytes", limits.memory_bytes)],
        "pids": [("pids.max", limits.pids)],
    }
    for controller, values in settings.items():
        own = _own_cgroup(controller)
        hierarchy = CGROUP_ROOT / controller
        if own is None or not hierarchy.is_dir():
            continue
        try:
            child = _make_child(hierarchy / own.lstrip("/"))
        except OSError:
            continue
        try:
            for name, value in values:
                _write(child / name, str(value))
            if controller == "memory" and (child / "memory.memsw.limit_in_bytes").exists():
                with contextlib.suppress(OSError):
                    _write(child / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        except OSError:
            with contextlib.suppress(OSError):
                child.rmdir()
            continue
        made[controller] = child
    if not made:
        return Cgroups("none")
    layer = "cgroup v1"
    return Cgroups(layer, memory=made.get("memory"), pids=made.get("pids"))


# -- what each sandboxed child gets ------------------------------------------------------------


def _processes_of(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    return count


class Limits:
    """Applied by a Sandbox to every child (`preexec`, in the child) and every child tracked
    (`track`), so that `kill_all` reaches them. Create with `Limits.create`; `close()`."""

    def __init__(self, limits: ProcessLimits, cgroups: Cgroups, nproc: int | None) -> None:
        self.process = limits
        self.cgroups = cgroups
        self._nproc = nproc
        self._killers: list[tuple[Any, Callable[[], None]]] = []
        self._on_kill: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._fds = cgroups.procs_fds()

    @classmethod
    def create(cls, limits: ProcessLimits, run_as_uid: int) -> Limits:
        cgroups = Cgroups.create(limits)
        nproc = None
        if cgroups.pids is None and run_as_uid != 0:
            nproc = limits.pids + _processes_of(run_as_uid)
        return cls(limits, cgroups, nproc)

    @property
    def layers(self) -> list[str]:
        """The layers in force, e.g. ["cgroup v1 (memory, pids)", "rlimits (…)"]."""
        layers = []
        if self.cgroups.layer != "none":
            controllers = [
                name
                for name, path in (("memory", self.cgroups.memory), ("pids", self.cgroups.pids))
                if path is not None
            ]
            layers.append(f"{self.cgroups.layer} ({', '.join(controllers)})")
        rlimits = ["address space", "file size"]
        if self._nproc is not None:
            rlimits.append("processes of the user")
        layers.append(f"rlimits ({', '.join(rlimits)})")
        return layers

    def preexec(self) -> None:
        """In the child, before exec: no locks, no allocation worth speaking of."""
        memory = self.process.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = self.process.file_bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self._nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self._nproc, self._nproc))
        for fd in self._fds:
            try:
                os.write(fd, b"0")
            except OSError:
                os._exit(126)  # fail closed: never run outside the drill's cgroup

    def track(self, proc: Any, kill: Callable[[], None]) -> None:
        with self._lock:
            self._killers = [(p, k) for p, k in self._killers if p.returncode is None]
            self._killers.append((proc, kill))

    def on_kill(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from whichever thread finds the breach) before anything is killed:
        work of our own that no kill reaches (a copy in a thread) stops on it."""
        with self._lock:
            self._on_kill.append(callback)

    def kill_all(self) -> None:
        """The callbacks, every tracked child that still runs (its whole container), then
        the cgroup."""
        with self._lock:
            callbacks = list(self._on_kill)
            killers = [(p, k) for p, k in self._killers if p.returncode is None]
        for callback in callbacks:
            callback()
        for _proc, kill in killers:
            with contextlib.suppress(OSError, ValueError):
                kill()
        self.cgroups.kill_all()

    def close(self) -> None:
        self.cgroups.remove()


# -- the watchdog -------------------------------------------------------------------------------


def allocated_bytes(root: Path) -> int:
    """Disk blocks allocated under `root` (no link followed; unreadable parts count 0)."""
    return _walk(root)[0]


def _walk_all(directories: Iterable[Path]) -> tuple[int, bool]:
    """What `directories` hold together, and whether every one could be read whole."""
    walked = [_walk(d) for d in directories]
    return sum(size for size, _ in walked), all(complete for _, complete in walked)


def _walk(root: Path) -> tuple[int, bool]:
    """(bytes allocated under `root`, whether every directory could be read)."""
    total = 0
    complete = True
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        info = entry.stat(follow_symlinks=False)
                        total += info.st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
        except FileNotFoundError:
            continue  # removed while we walked
        except OSError:
            complete = False
    return total, complete


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@dataclass
class Usage:
    """Peaks seen by the watchdog."""

    disk_peak: int = 0
    free_low: int | None = None
    pids_peak: int = 0
    samples: int = 0


class Watchdog:
    """Samples disk, free space, time and the cgroup every TICK_S; on the first breach,
    kills every child of `limits` (`on_breach` is called first, from the watchdog thread)."""

    def __init__(
        self,
        limits: Limits,
        *,
        disk_bytes: int,
        reserve_bytes: int,
        deadline: float,
        directories: Iterable[Path] = (),
        started: float | None = None,
    ) -> None:
        self.limits = limits
        self.disk_bytes = disk_bytes
        self.reserve_bytes = reserve_bytes
        self.deadline = deadline  # time.monotonic() value
        self.started = time.monotonic() if started is None else started
        self.usage = Usage()
        self.breach: Breach | None = None
        self._dirs: list[Path] = list(directories)
        self._baseline: dict[int, tuple[Path, int]] = {}  # device: (a path on it, free)
        self._next_walk = 0.0
        self._grown_at_walk = 0
        # Walk again once the volumes grew this much: an eighth of the budget, 16-64 MiB.
        self._walk_step = max(16 << 20, min(64 << 20, disk_bytes // 8))
        self._last_walk = 0
        self._walk_complete = True
        self._note_baseline(self._dirs)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="budget-watchdog", daemon=True)

    def watch(self, directory: Path) -> None:
        with self._lock:
            self._dirs.append(directory)
            self._note_baseline([directory])

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check_now(self) -> Breach | None:
        """One measurement (also run by the loop); the breach, if any, is recorded."""
        found = self._measure()
        if found is not None and self.breach is None:
            self.breach = found
            self.limits.kill_all()
        return self.breach

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if self.check_now() is not None:
                return
            spent = time.monotonic() - started
            self._stop.wait(max(TICK_S - spent, 0.005))

    def _measure(self) -> Breach | None:
        usage = self.usage
        usage.samples += 1
        now = time.monotonic()
        if now >= self.deadline:
            allowed = self.deadline - self.started
            return Breach(
                "time", f"the deadline of {allowed:.0f} s passed", allowed, now - self.started
            )
        with self._lock:
            directories = list(self._dirs)
        used = self._disk_used(directories)
        self._note_peak(used)
        if used > self.disk_bytes:
            return Breach(
                "disk",
                f"{_mib(used)} written, budget {_mib(self.disk_bytes)}",
                self.disk_bytes,
                used,
            )
        breach = self._free_space(directories)
        if breach is not None:
            return breach
        return self._cgroup_events()

    def measure_disk(self) -> int:
        """Walk our directories now: a breach another limit noticed first (a file at
        RLIMIT_FSIZE) is reported with the size then, not with the last sample's, which can
        lag a fast writer by a tick."""
        with self._lock:
            directories = list(self._dirs)
        used, _complete = _walk_all(directories)
        self._note_peak(used)
        return used

    def _note_peak(self, used: int) -> None:
        with self._lock:  # the watchdog thread and the drill's both measure
            self.usage.disk_peak = max(self.usage.disk_peak, used)

    def _disk_used(self, directories: list[Path]) -> int:
        """What our directories hold, measured cheaply every tick and exactly when it matters.

        Every tick: how much the volumes' used space grew since the start (statvfs, a few
        microseconds; others' writes count too). A walk of our directories (allocated
        blocks; 1-100 ms for a data directory, depending on the host's load) runs when that
        growth passes the budget (to tell our writes from others'), when it grew by a step
        since the last walk, and every WALK_EVERY_S regardless (others' deletions could hide
        our growth; RLIMIT_FSIZE bounds each file meanwhile). Where the walk cannot read
        everything (a sandbox user whose files we may not list), the growth counts."""
        grown = self._volume_growth()
        now = time.monotonic()
        due = (
            grown > self.disk_bytes
            or grown - self._grown_at_walk >= self._walk_step
            or now >= self._next_walk
        )
        if not due:
            return min(grown, self._last_walk) if self._walk_complete else grown
        self._last_walk, self._walk_complete = _walk_all(directories)
        spent = time.monotonic() - now
        # A slow walk (a loaded host, a huge directory) is not repeated at every tick.
        self._next_walk = now + max(WALK_EVERY_S, 10 * spent)
        self._grown_at_walk = grown
        if self._walk_complete:
            return self._last_walk
        return max(self._last_walk, grown)

    def _volume_growth(self) -> int:
        grown = 0
        for path, free_at_start in self._baseline.values():
            with contextlib.suppress(OSError):
                grown += max(0, free_at_start - free_bytes(path))
        return grown

    def _note_baseline(self, directories: list[Path]) -> None:
        for directory in directories:
            with contextlib.suppress(OSError):
                device = directory.stat().st_dev
                if device not in self._baseline:
                    self._baseline[device] = (directory, free_bytes(directory))

    def _free_space(self, directories: list[Path]) -> Breach | None:
        seen: set[int] = set()
        for directory in directories:
            with contextlib.suppress(OSError):
                device = directory.stat().st_dev
                if device in seen:
                    continue
                seen.add(device)
                free = free_bytes(directory)
                low = self.usage.free_low
                self.usage.free_low = free if low is None else min(low, free)
                if free < self.reserve_bytes:
                    return Breach(
                        "disk",
                        f"only {_mib(free)} left free on the volume of {directory}, "
                        f"reserve {_mib(self.reserve_bytes)}",
                        self.reserve_bytes,
                        free,
                    )
        return None

    def _cgroup_events(self) -> Breach | None:
        cgroups = self.limits.cgroups
        current = cgroups.pids_current()
        if current is not None:
            self.usage.pids_peak = max(self.usage.pids_peak, current)
        oom = cgroups.oom_kills()
        if oom:
            limit = self.limits.process.memory_bytes
            return Breach(
                "memory",
                f"{oom} process(es) killed at the memory budget {_mib(limit)}",
                limit,
                cgroups.memory_peak() or limit,
            )
        refused = cgroups.refused_forks()
        if refused:
            limit = self.limits.process.pids
            return Breach(
                "processes",
                f"{refused} fork(s) refused at the process budget {limit}",
                limit,
                limit,
            )
        return None


def _mib(value: float) -> str:
    return f"{value / (1 << 20):.0f} MiB"
