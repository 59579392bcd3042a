"""Running pg_dump, behind one interface (`Dumper`) for its two places: the host's own
pg_dump (`LocalDumper`, here) and the DB container's (`backup/docker_dump.ContainerDumper`).

Argv holds no secret: the local pg_dump gets the password through its environment (or a 0600
service file for an sslpassword), as sbtc_ops.pg.libpq prepares them; the container's reads it
on stdin. Both run through proc.streaming_child (dies with us, killed and reaped on failure).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sbtc_ops.backup.crypto import AGE_SUFFIX, HashingWriter, encrypt_stream
from sbtc_ops.backup.source import ConnectionTarget
from sbtc_ops.errors import DependencyError
from sbtc_ops.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, create_private
from sbtc_ops.pg.binaries import PgBinaries
from sbtc_ops.pg.libpq import client_invocation
from sbtc_ops.proc import StreamingChild, streaming_child
from sbtc_ops.progress import watch_growth

log = logging.getLogger(__name__)

ARCHIVE_NAME = "signer.dump"  # custom format; the directory format uses "signer.dir/"
DIRECTORY_NAME = "signer.dir"
CHUNK = 1 << 20


@dataclass(frozen=True)
class DumpOptions:
    format: str  # "custom" | "directory"
    compression: str
    jobs: int
    snapshot: str
    exclude_table_data: tuple[str, ...] = ()


@dataclass(frozen=True)
class DumpJob:
    """One dump into `work_dir`: what to dump, how, encrypted for whom."""

    target: ConnectionTarget
    options: DumpOptions
    work_dir: Path
    recipients: list[str]
    expected_size: int | None = None  # for the progress bar's ETA


class Dumper(Protocol):
    """A pg_dump that can dump the source server; `version` goes into the manifest."""

    @property
    def version(self) -> str: ...

    @property
    def writes_directories(self) -> bool:
        """Whether it can write the directory format (one stream out of a container cannot)."""
        ...

    def dump(self, job: DumpJob) -> None: ...


def run_pg_dump(
    argv: Sequence[str],
    target: ConnectionTarget,
    env: Mapping[str, str],
    *,
    output: Path | None = None,
    recipients: Sequence[str] = (),
    stdin_bytes: bytes | None = None,
    what: str = "pg_dump",
) -> None:
    """Run a pg_dump; with `output`, its stdout is written there (age-encrypted for
    `recipients`), else pg_dump writes its files itself. Raises on its failure."""
    with streaming_child(
        argv, env=env, stdin_bytes=stdin_bytes, pipe_stdout=output is not None, name="pg_dump"
    ) as child:
        if output is not None:
            _write_stream(child, output, recipients)
    if child.returncode != 0:
        message = target.scrub(child.stderr.decode(errors="replace"))
        raise DependencyError(f"{what} failed: {message or f'exit status {child.returncode}'}")


def _write_stream(child: StreamingChild, output: Path, recipients: Sequence[str]) -> None:
    with os.fdopen(create_private(output), "wb") as raw:
        if recipients:
            encrypt_stream(child.stdout, HashingWriter(raw), list(recipients))  # type: ignore[arg-type]
            return
        while chunk := child.stdout.read(CHUNK):
            raw.write(chunk)


def pg_dump_argv(
    binaries: PgBinaries, conninfo: str, options: DumpOptions, output: Path | None
) -> list[str]:
    """pg_dump's argv; `conninfo` is ClientInvocation.conninfo, which holds no secret."""
    argv = [
        str(binaries.pg_dump),
        f"--format={options.format}",
        f"--compress={options.compression}",
        f"--snapshot={options.snapshot}",
        "--no-password",
        "--no-sync",  # sbtc-ops fsyncs the files itself before the rename
    ]
    if options.format == "directory":
        argv.append(f"--jobs={options.jobs}")
    argv.extend(f"--exclude-table-data={table}" for table in options.exclude_table_data)
    if output is not None:
        argv.append(f"--file={output}")
    argv.extend(["--dbname", conninfo])
    log.debug("pg_dump command: %s (secrets in the environment only)", " ".join(argv))
    return argv


@dataclass(frozen=True)
class LocalDumper:
    """The host's pg_dump (custom or directory format)."""

    binaries: PgBinaries
    writes_directories: bool = True

    @property
    def version(self) -> str:
        return self.binaries.version

    def dump(self, job: DumpJob) -> None:
        with client_invocation(job.target.client) as invocation:
            conninfo, env = invocation.conninfo, invocation.env
            if job.options.format == "directory":
                self._dump_directory(job, conninfo, env)
                return
            encrypted = bool(job.recipients)
            output = job.work_dir / (ARCHIVE_NAME + (AGE_SUFFIX if encrypted else ""))
            # Encrypted, pg_dump writes to stdout and we encrypt on the fly.
            argv = pg_dump_argv(self.binaries, conninfo, job.options, None if encrypted else output)
            with watch_growth(
                "pg_dump | age" if encrypted else "pg_dump", output, job.expected_size
            ):
                if encrypted:
                    run_pg_dump(argv, job.target, env, output=output, recipients=job.recipients)
                else:
                    run_pg_dump(argv, job.target, env)
            output.chmod(PRIVATE_FILE_MODE)

    def _dump_directory(self, job: DumpJob, conninfo: str, env: Mapping[str, str]) -> None:
        out_dir = job.work_dir / DIRECTORY_NAME
        with watch_growth("pg_dump", out_dir, job.expected_size):
            run_pg_dump(
                pg_dump_argv(self.binaries, conninfo, job.options, out_dir), job.target, env
            )
        for path in out_dir.rglob("*"):
            path.chmod(PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_FILE_MODE)
        if job.recipients:
            _encrypt_tree(out_dir, job.recipients)


def _encrypt_tree(root: Path, recipients: list[str]) -> None:
    """Directory format: each file is encrypted on its own, the clear copy removed at once."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        encrypted = path.with_name(path.name + AGE_SUFFIX)
        with path.open("rb") as reader, encrypted.open("wb") as writer:
            encrypted.chmod(PRIVATE_FILE_MODE)
            encrypt_stream(reader, writer, recipients)
        path.unlink()
