"""Running pg_restore / psql on a prepared archive, collecting every error line."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbtc_ops.backup.archive import PreparedArchive
from sbtc_ops.pg.binaries import PgBinaries
from sbtc_ops.progress import shown, watch_reads

_ERROR_LINE = re.compile(r"(pg_restore: error:|ERROR:|FATAL:|psql:.*ERROR)")
_IGNORED = re.compile(r"errors ignored on restore: (\d+)")


@dataclass
class RestoreRun:
    returncode: int
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    argv: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.errors


def restore_argv(
    binaries: PgBinaries, archive: PreparedArchive, conninfo: str, *, jobs: int, strict: bool
) -> list[str]:
    """strict=True stops at the first error (disaster recovery); otherwise every error is
    collected, so a verification report can quote them."""
    if archive.format == "plain":
        return [
            str(binaries.psql),
            "-X",
            "-q",
            "--no-password",
            "-v",
            f"ON_ERROR_STOP={1 if strict else 0}",
            "-f",
            str(archive.path),
            "--dbname",
            conninfo,
        ]
    argv = [
        str(binaries.pg_restore),
        "--no-owner",
        "--no-privileges",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    if strict:
        argv.append("--exit-on-error")
        if jobs == 1 or archive.format == "tar":
            argv.append("--single-transaction")
    if jobs > 1 and archive.format in ("custom", "directory"):
        argv.append(f"--jobs={jobs}")
    argv.append(str(archive.path))
    return argv


def run_restore(
    argv: list[str], env_extra: dict[str, str], *, progress_of: Path | None = None
) -> RestoreRun:
    """`progress_of`: the archive, whose size is the total of the progress bar (how much of
    it the restore has read), drawn on a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(env_extra)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        errors="replace",
    )
    total = archive_size(progress_of) if progress_of is not None and shown() else None
    try:
        with watch_reads(Path(argv[0]).name, proc.pid, total):
            _, stderr = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    errors = [line.strip() for line in stderr.splitlines() if _ERROR_LINE.search(line)]
    ignored = _IGNORED.search(stderr)
    if ignored and not errors:
        errors.append(f"pg_restore: errors ignored on restore: {ignored.group(1)}")
    return RestoreRun(proc.returncode, errors, time.perf_counter() - start, argv)


def archive_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
