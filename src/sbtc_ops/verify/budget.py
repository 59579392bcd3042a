"""The drill's budgets: how much disk, memory, processes and time an archive may make it use.

The numbers come from settings.verify and the archive's size (the manifest's recorded size,
or a foreign dump's size); the mechanism is pg/limits.py. A `DrillGuard` lives as long as one
drill: it puts the sandbox under limits (cgroup, rlimits), runs the watchdog over the drill's
directories and clock, sets the server's and roles' own limits, and says what happened in
the `drill.budget` check and the report's `budgets`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbtc_ops.pg.limits import Breach, Limits, ProcessLimits, Watchdog
from sbtc_ops.results import CheckResult, Status
from sbtc_ops.verify.checks import SECTION

if TYPE_CHECKING:
    from sbtc_ops.backup.archive import LocatedBackup
    from sbtc_ops.config import Settings, VerifySettings

MIB = 1 << 20
GB = 1_000_000_000
# serve stops a verify job this long after the drill's longest deadline: locating or
# downloading the backup comes first, and cleaning up after.
SERVE_GRACE_S = 900.0
CHECK_ID = "drill.budget"
# How RLIMIT_FSIZE (EFBIG) and temp_file_limit show in a restore's errors.
_DISK_LIMIT_ERRORS = ("File too large", "temp_file_limit")


@dataclass(frozen=True)
class DrillBudget:
    archive_bytes: int
    disk_bytes: int
    reserve_bytes: int
    memory_bytes: int
    pids: int
    deadline_s: float
    query_timeout_s: float

    @classmethod
    def for_archive(cls, settings: VerifySettings, archive_bytes: int) -> DrillBudget:
        disk = max(settings.disk_min_mb * MIB, int(settings.disk_factor * archive_bytes))
        if settings.disk_max_mb is not None:
            disk = min(disk, settings.disk_max_mb * MIB)
        deadline = settings.deadline_min_s + settings.deadline_s_per_gb * archive_bytes / GB
        deadline = max(settings.deadline_min_s, min(settings.deadline_max_s, deadline))
        return cls(
            archive_bytes=archive_bytes,
            disk_bytes=disk,
            reserve_bytes=settings.disk_reserve_mb * MIB,
            memory_bytes=settings.memory_mb * MIB,
            pids=settings.max_processes,
            deadline_s=deadline,
            query_timeout_s=min(settings.query_timeout_s, deadline),
        )


def archive_size(located: LocatedBackup) -> int:
    """Bytes of the backup's files as they are here (no link followed); with a manifest, at
    most what it records (its checksum check holds the files to it)."""
    root = located.root
    on_disk = 0
    paths = [root] if root.is_file() else _files_under(root)
    for path in paths:
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                on_disk += info.st_size
    if located.manifest is not None:
        return min(on_disk, max(located.manifest.total_size, 0))
    return on_disk


def _files_under(root: Path) -> list[Path]:
    return [Path(d) / name for d, _dirs, names in os.walk(root) for name in names]


def verify_job_timeout(settings: Settings) -> float:
    """serve's timeout of a verify job: the longest deadline a drill can get, plus a grace."""
    return settings.verify.deadline_max_s + SERVE_GRACE_S


class DrillGuard:
    """The budgets of one drill, in force from `start()` to `close()`."""

    def __init__(self, budget: DrillBudget, run_as_uid: int, started: float) -> None:
        self.budget = budget
        self.started = started  # time.monotonic() when the drill started
        self.limits = Limits.create(
            ProcessLimits(budget.memory_bytes, budget.pids, budget.disk_bytes), run_as_uid
        )
        self.watchdog = Watchdog(
            self.limits,
            disk_bytes=budget.disk_bytes,
            reserve_bytes=budget.reserve_bytes,
            deadline=started + budget.deadline_s,
            started=started,
        )
        self._memory_peak: int | None = None
        self._elapsed: float | None = None

    def start(self, *directories: Path) -> DrillGuard:
        for directory in directories:
            self.watchdog.watch(directory)
        self.watchdog.start()
        return self

    def watch(self, directory: Path) -> None:
        self.watchdog.watch(directory)

    @property
    def breach(self) -> Breach | None:
        return self.watchdog.breach

    def record(self, breach: Breach) -> None:
        """A breach found outside the watchdog (a query timeout, an oversized value): the
        first one counts, and the sandbox is killed."""
        if self.watchdog.breach is None:
            self.watchdog.breach = breach
            self.limits.kill_all()

    def note_errors(self, errors: list[str]) -> None:
        """The kernel's and the server's own disk limits show as errors of the restore (a
        file at RLIMIT_FSIZE, temporary files past temp_file_limit): breaches of the disk
        budget, whichever limit noticed first."""
        for line in errors:
            if any(sign in line for sign in _DISK_LIMIT_ERRORS):
                limit = self.budget.disk_bytes
                used = max(limit, self.watchdog.measure_disk())
                self.record(
                    Breach("disk", f"a limit of the disk budget was hit: {line[:200]}", limit, used)
                )
                return

    def remaining_s(self) -> float:
        return max(0.0, self.started + self.budget.deadline_s - time.monotonic())

    def server_settings(self) -> dict[str, str]:
        """The throwaway server's own limits: temporary files within the disk budget, and WAL
        recycled well before it (the tuned default lets 16 GB accumulate)."""
        disk_mb = self.budget.disk_bytes // MIB
        return {
            "temp_file_limit": f"{disk_mb * 1024}kB",
            "max_wal_size": f"{min(16384, max(256, disk_mb // 4))}MB",
        }

    def reader_timeout_options(self) -> str:
        """libpq options for the drill's reader session: statement_timeout, never beyond the
        deadline. Given at connection time, after the reader's own `statement_timeout=0`
        (the last one wins), so nothing the archive set can lift it. (A role default would be
        taken for the archive's own setting and reset, verify/dbfacts.py; and pg_restore and
        psql set statement_timeout = 0 in their own sessions: the watchdog's deadline is what
        bounds the restore.)"""
        timeout_ms = max(1, int(min(self.budget.query_timeout_s, self.remaining_s()) * 1000))
        return f"-c statement_timeout={timeout_ms}"

    def close(self, *, keep: bool = False) -> None:
        """Stop the watchdog; kill and remove the cgroup unless a kept cluster still runs in it."""
        self.watchdog.stop()
        self._elapsed = time.monotonic() - self.started
        self._memory_peak = self.limits.cgroups.memory_peak()
        if not keep:
            self.limits.close()

    # -- what the report says -----------------------------------------------------------------

    def result(self) -> CheckResult:
        breach = self.breach
        usage = self.to_json()
        if breach is not None:
            return CheckResult(
                CHECK_ID,
                Status.FAIL,
                f"over budget: {breach.resource}: {breach.detail}; the drill was stopped",
                _REMEDIATION[breach.resource],
                SECTION,
                data={"resource": breach.resource, "limit": breach.limit, "used": breach.used},
            )
        disk = usage["disk"]
        detail = (
            f"disk peak {disk['peak_bytes'] // MIB} of {disk['budget_bytes'] // MIB} MiB, "
            f"time {usage['time']['elapsed_s']:.0f} of {usage['time']['deadline_s']:.0f} s, "
            f"limits: {'; '.join(usage['layers'])}"
        )
        return CheckResult(CHECK_ID, Status.PASS, detail, None, SECTION)

    def to_json(self) -> dict[str, Any]:
        usage = self.watchdog.usage
        budget = self.budget
        breach = self.breach
        elapsed = self._elapsed if self._elapsed is not None else time.monotonic() - self.started
        return {
            "breach": None
            if breach is None
            else {"resource": breach.resource, "detail": breach.detail},
            "layers": self.limits.layers,
            "archive_bytes": budget.archive_bytes,
            "disk": {
                "budget_bytes": budget.disk_bytes,
                "peak_bytes": usage.disk_peak,
                "reserve_bytes": budget.reserve_bytes,
                "lowest_free_bytes": usage.free_low,
            },
            "memory": {
                "budget_bytes": budget.memory_bytes,
                "sandbox_peak_bytes": self._memory_peak,
                # ru_maxrss is in KiB on Linux: the root process itself.
                "root_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            },
            "processes": {"budget": budget.pids, "peak": usage.pids_peak or None},
            "time": {
                "deadline_s": round(budget.deadline_s, 1),
                "elapsed_s": round(elapsed, 3),
                "query_timeout_s": round(budget.query_timeout_s, 1),
            },
        }


_REMEDIATION = {
    "disk": "the archive restores to far more data than its size suggests (or the volume is "
    "nearly full): treat it as hostile unless you know it is genuine; then raise "
    "verify.disk_factor / verify.disk_min_mb or free disk space",
    "memory": "the archive made the restore, or the values sbtc-ops reads, exceed the memory "
    "budget: a signer's database never does; treat it as hostile, or raise verify.memory_mb",
    "processes": "the restore tried to start more processes than the budget: treat the archive "
    "as hostile, or raise verify.max_processes",
    "time": "the drill did not finish before its deadline (a restore or query that hangs is "
    "how a crafted archive stalls it): treat it as hostile unless the host is simply slow; "
    "then raise verify.deadline_min_s / verify.deadline_s_per_gb / verify.query_timeout_s",
}
