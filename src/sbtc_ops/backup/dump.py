"""Running pg_dump: argv without secrets; the password reaches it through its environment
(or a 0600 service file for an sslpassword), as sbtc_ops.pg.libpq prepares them."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sbtc_ops.backup.crypto import HashingWriter, encrypt_stream
from sbtc_ops.backup.source import ConnectionTarget
from sbtc_ops.errors import DependencyError
from sbtc_ops.pg.binaries import PgBinaries
from sbtc_ops.proc import InBackground, die_with_parent, wait_child

log = logging.getLogger(__name__)

ARCHIVE_NAME = "signer.dump"  # custom format; the directory format uses "signer.dir/"
DIRECTORY_NAME = "signer.dir"


@dataclass(frozen=True)
class DumpOptions:
    format: str  # "custom" | "directory"
    compression: str
    jobs: int
    snapshot: str
    exclude_table_data: tuple[str, ...] = ()


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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _raise_on_failure(
    proc: subprocess.Popen[bytes], stderr: bytes, target: ConnectionTarget
) -> None:
    if proc.returncode != 0:
        message = target.scrub(stderr.decode(errors="replace")) or f"exit status {proc.returncode}"
        raise DependencyError(f"pg_dump failed: {message}")


@contextmanager
def _pg_dump(
    argv: Sequence[str], target: ConnectionTarget, env: Mapping[str, str], *, pipe_stdout: bool
) -> Iterator[subprocess.Popen[bytes]]:
    """Run pg_dump; the body consumes stdout if piped. Waits, then raises on failure."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
        # A kill -9 of sbtc-ops must not leave pg_dump writing into the partial backup.
        preexec_fn=die_with_parent(),
    )
    try:
        assert proc.stderr is not None
        stderr = InBackground(proc.stderr.read, name="pg_dump-stderr")
        yield proc
        wait_child(proc)
        collected = stderr.result()
    except BaseException:
        _stop(proc)
        raise
    _raise_on_failure(proc, collected, target)


def dump_to_path(argv: Sequence[str], target: ConnectionTarget, env: Mapping[str, str]) -> None:
    """pg_dump writes the archive itself (custom file or directory)."""
    with _pg_dump(argv, target, env, pipe_stdout=False):
        pass


def dump_encrypted(
    argv: Sequence[str],
    target: ConnectionTarget,
    env: Mapping[str, str],
    output: Path,
    recipients: list[str],
) -> tuple[str, int]:
    """pg_dump to stdout, age-encrypted on the fly into `output`; returns (sha256, size)."""
    with _pg_dump(argv, target, env, pipe_stdout=True) as proc:
        assert proc.stdout is not None
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            writer = HashingWriter(raw)
            encrypt_stream(proc.stdout, writer, recipients)  # type: ignore[arg-type]
    return writer.digest.hexdigest(), writer.size
