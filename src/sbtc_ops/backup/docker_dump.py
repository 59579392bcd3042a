"""pg_dump inside the database container (`docker exec`), streamed out: the source kind for a
signer DB that only the compose network reaches and a host with no matching pg_dump.

- Version match: the container's own pg_dump of the server's major version
  (/usr/lib/postgresql/<major>/bin/pg_dump, as in Debian and the official image), else the
  one on its PATH if it is at least as new as the server.
- The snapshot is the one the host's session exported (same server), so the manifest's row
  counts describe exactly what was dumped.
- No secret in any argv and none in `docker exec -e` (an exec's env is shown by
  `docker inspect`): the password is the first line on the exec's stdin, read by a fixed
  `sh` script that exports it to pg_dump alone.
- Custom format only (one stream); a kill of sbtc-ops kills the docker client, and closing
  its stream ends pg_dump in the container.

`ContainerDumper` is the `backup.dump.Dumper` for it; every docker command runs through proc.py.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from psycopg.conninfo import make_conninfo

from sbtc_ops.backup.crypto import AGE_SUFFIX
from sbtc_ops.backup.dump import ARCHIVE_NAME, DumpJob, DumpOptions, run_pg_dump
from sbtc_ops.backup.source import ConnectionTarget
from sbtc_ops.errors import DependencyError
from sbtc_ops.proc import run_interruptible
from sbtc_ops.progress import watch_growth

log = logging.getLogger(__name__)

# $1.. is pg_dump's argv; the password arrives on stdin, never in argv or the exec's env.
STDIN_SECRET_SCRIPT = 'IFS= read -r PGPASSWORD; export PGPASSWORD; exec "$@"'  # noqa: S105
FIND_PG_DUMP = (
    'for f in /usr/lib/postgresql/*/bin/pg_dump; do [ -x "$f" ] && echo "$f"; done; '
    "command -v pg_dump || true"
)
DOCKER_TIMEOUT_S = 30.0


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise DependencyError(
            "docker.db_container is set but the docker command is not installed here"
        )
    return found


def _docker_env() -> dict[str, str]:
    """Ours (DOCKER_HOST and friends) without the PG* settings meant for the host's libpq."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _run(argv: list[str]) -> str:
    try:
        done = run_interruptible(argv, timeout_s=DOCKER_TIMEOUT_S, env=_docker_env())
    except subprocess.TimeoutExpired:
        raise DependencyError(
            f"{' '.join(argv[:4])}…: no answer in {DOCKER_TIMEOUT_S:.0f}s"
        ) from None
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip() or done.returncode
        raise DependencyError(f"{' '.join(argv[:4])}…: {error}")
    return done.stdout.decode(errors="replace")


def _major(version_text: str) -> tuple[int, str]:
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text)
    if not match:
        raise DependencyError(f"cannot read a version from {version_text.strip()!r}")
    return int(match.group(1)), match.group(0)


def container_pg_dump(container: str, server_major: int) -> tuple[str, str]:
    """(path, version) of the container's pg_dump that matches the server's major version."""
    docker = docker_cli()
    candidates = _run([docker, "exec", container, "sh", "-c", FIND_PG_DUMP]).split()
    if not candidates:
        raise DependencyError(f"container {container} has no pg_dump")
    best: tuple[int, str, str] | None = None
    for path in dict.fromkeys(candidates):
        major, version = _major(_run([docker, "exec", container, path, "--version"]))
        if major == server_major:
            return path, version
        if major > server_major and (best is None or major < best[0]):
            best = (major, path, version)
    if best is None:
        raise DependencyError(
            f"container {container} has no pg_dump of version ≥ {server_major} (the server's)"
        )
    return best[1], best[2]


def compress_argument(compression: str, pg_dump_major: int) -> str:
    """pg_dump < 16 takes only a gzip level (0-9), not METHOD:LEVEL: map to the nearest."""
    if pg_dump_major >= 16:
        return compression
    method, _, level = compression.partition(":")
    if method == "none" or level == "0":
        return "0"
    if method.isdigit():
        return method
    return level if level.isdigit() and int(level) <= 9 else "6"


def exec_argv(
    container: str,
    pg_dump: tuple[str, str],
    target: ConnectionTarget,
    options: DumpOptions,
    docker: str | None = None,
) -> list[str]:
    """`docker exec -i CONTAINER sh -c SCRIPT sh pg_dump ARGS…`: no password anywhere."""
    params = target.params
    # Inside the container the server is on its loopback; the port, user and database are
    # the signer's. make_conninfo quotes hostile values (spaces, quotes) correctly.
    conninfo = make_conninfo(
        host="127.0.0.1",
        port=str(params.get("port") or 5432),
        user=str(params.get("user") or "postgres"),
        dbname=str(params.get("dbname") or "signer"),
        application_name="sbtc-ops",
    )
    argv = [
        docker or docker_cli(),
        "exec",
        "-i",
        container,
        "sh",
        "-c",
        STDIN_SECRET_SCRIPT,
        "sh",
        pg_dump[0],
        "--format=custom",
        f"--compress={compress_argument(options.compression, _major(pg_dump[1])[0])}",
        f"--snapshot={options.snapshot}",
        "--no-sync",
    ]
    argv.extend(f"--exclude-table-data={table}" for table in options.exclude_table_data)
    argv.extend(["--dbname", conninfo])
    return argv


@dataclass(frozen=True)
class ContainerDumper:
    """pg_dump inside `container`: `path` and `version` found by `find_container_dumper`."""

    container: str
    path: str
    version: str
    writes_directories: bool = False

    def dump(self, job: DumpJob) -> None:
        """Stream the archive out of the container (age-encrypted if there are recipients)."""
        output = job.work_dir / (ARCHIVE_NAME + (AGE_SUFFIX if job.recipients else ""))
        argv = exec_argv(self.container, (self.path, self.version), job.target, job.options)
        log.debug("docker exec pg_dump: %s (password on stdin only)", " ".join(argv))
        with watch_growth(f"docker exec {self.container} pg_dump", output):
            run_pg_dump(
                argv,
                job.target,
                _docker_env(),
                output=output,
                recipients=job.recipients,
                stdin_bytes=(job.target.password or "").encode() + b"\n",
                what=f"pg_dump in container {self.container}",
            )


def find_container_dumper(container: str, server_major: int) -> ContainerDumper:
    path, version = container_pg_dump(container, server_major)
    return ContainerDumper(container, path, version)
