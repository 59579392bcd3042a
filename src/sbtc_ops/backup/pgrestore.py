"""Running pg_restore / psql on a prepared archive, in the sandbox, collecting every error.

A plain-SQL dump is replayed by psql reading its standard input, which we feed: first a
`\\restrict` with a key the dump cannot know, so every psql meta-command in the dump (`\\!`
runs a shell, `\\o` and `\\copy` write files, `\\connect` switches databases) is refused;
the dump's own `\\restrict`/`\\unrestrict` lines (pg_dump ≥ 17.6 writes them) are dropped.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sbtc_ops.backup.archive import PreparedArchive
from sbtc_ops.errors import DependencyError
from sbtc_ops.pg.binaries import (
    RESTRICT_MAJOR,
    RESTRICT_SINCE,
    PgBinaries,
    has_restrict,
    restrict_floor,
    tool_version,
)
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.progress import shown, watch_reads
from sbtc_ops.results import Stopwatch

_ERROR_LINE = re.compile(r"(pg_restore: error:|ERROR:|FATAL:|psql:.*(ERROR|error))")
_IGNORED = re.compile(r"errors ignored on restore: (\d+)")
_RESTRICT_LINE = re.compile(rb"^\\(un)?restrict(\s.*)?$")
_COPY_START = re.compile(rb"^COPY .* FROM stdin;\s*$")
_COPY_END = b"\\."
MAX_ERRORS_KEPT = 1000
MAX_LINE = 8192


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
    collected, so a verification report can quote them. A plain dump comes on stdin, and
    only to a psql that honours `\\restrict` (require_restrict)."""
    if archive.format == "plain":
        require_restrict(binaries.psql)
        return [
            str(binaries.psql),
            "-X",
            "-q",
            "--no-password",
            "-v",
            f"ON_ERROR_STOP={1 if strict else 0}",
            "-f",
            "-",
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


def require_restrict(psql: Path) -> None:
    """Fail closed: plain SQL is replayed only by a psql that honours `\\restrict` (an older
    one ignores it, and the dump's `\\!` would run). Exit 2, naming the binary."""
    found = tool_version(psql)
    if found is not None and has_restrict(found[1]):
        return
    shown = f"version {found[1]}" if found else "no version it reports"
    floors = ", ".join(
        f for f in (restrict_floor(m) for m in sorted(RESTRICT_SINCE, reverse=True)) if f
    )
    raise DependencyError(
        f"{psql} ({shown}) does not honour \\restrict: refusing to replay a plain SQL dump "
        f"with it (meta-commands in the dump such as \\! would run); needs psql "
        f"{RESTRICT_MAJOR}.x, or at least {floors}",
        hint="install a current PostgreSQL client (or unset postgres.bin_dir to use the "
        "embedded binaries), or use a custom-format dump",
    )


def feed_plain_sql(source: Path, sink: IO[bytes], key: str) -> None:
    """Write `source` to psql's stdin behind a `\\restrict KEY`, without the dump's own
    restrict lines (outside COPY data, where they would be meta-commands)."""
    sink.write(f"\\restrict {key}\n".encode())
    in_copy = False
    with source.open("rb") as reader:
        for line in reader:
            bare = line.rstrip(b"\r\n")
            if in_copy:
                in_copy = bare != _COPY_END
            elif _COPY_START.match(bare):
                in_copy = True
            elif _RESTRICT_LINE.match(bare):
                continue
            sink.write(line)


def run_restore(
    argv: list[str],
    env_extra: dict[str, str],
    sandbox: Sandbox,
    plain_source: Path | None = None,
    shown_name: str | None = None,
    *,
    progress_of: Path | None = None,
) -> RestoreRun:
    """Run the restore in `sandbox`; a plain dump (`plain_source`) is fed on stdin.
    `progress_of`: the archive, whose size is the total of the progress bar (how much of it
    the restore has read), drawn on a terminal."""
    watch = Stopwatch()
    proc = sandbox.popen(
        argv,
        env=env_extra,
        stdin=subprocess.PIPE if plain_source is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    feeder = _start_feeder(proc, plain_source)
    total = archive_size(progress_of) if progress_of is not None and shown() else None
    with sandbox.reaped(proc):
        assert proc.stderr is not None
        with watch_reads(Path(argv[0]).name, proc.pid, total):
            errors, ignored = read_errors(proc.stderr)
            proc.wait()
        if feeder is not None:
            feeder.join()
    if plain_source is not None:  # psql read stdin: say which file the lines are of
        name = f"psql:{shown_name or plain_source.name}:"
        errors = [line.replace("psql:<stdin>:", name) for line in errors]
    if ignored is not None and not errors:
        errors.append(f"pg_restore: errors ignored on restore: {ignored}")
    return RestoreRun(proc.returncode, errors, watch.elapsed(), argv)


def read_errors(stream: IO[bytes]) -> tuple[list[str], str | None]:
    """The error lines of a restore's stderr, and pg_restore's "errors ignored" count, read
    in bounded pieces: a dump controls what its errors say (and how many there are), so at
    most MAX_ERRORS_KEPT lines of at most MAX_LINE bytes are kept; the rest are counted."""
    errors: list[str] = []
    ignored: str | None = None
    dropped = 0
    continued = False  # the piece read is the rest of a line longer than MAX_LINE
    while piece := stream.readline(MAX_LINE):
        starts_line, continued = not continued, not piece.endswith(b"\n")
        if not starts_line:
            continue
        line = piece.decode(errors="replace").strip()
        if found := _IGNORED.search(line):
            ignored = found.group(1)
        if not _ERROR_LINE.search(line):
            continue
        if len(errors) < MAX_ERRORS_KEPT:
            errors.append(line)
        else:
            dropped += 1
    if dropped:
        errors.append(f"… and {dropped} more error line(s)")
    return errors, ignored


def _start_feeder(proc: subprocess.Popen[bytes], source: Path | None) -> threading.Thread | None:
    if source is None:
        return None
    stdin = proc.stdin
    assert stdin is not None
    key = secrets.token_hex(16)

    def feed() -> None:
        # psql may stop reading (ON_ERROR_STOP, killed): its exit status says why.
        with contextlib.suppress(OSError):
            try:
                feed_plain_sql(source, stdin, key)
            finally:
                stdin.close()

    thread = threading.Thread(target=feed, name="psql-feed", daemon=True)
    thread.start()
    return thread


def archive_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
