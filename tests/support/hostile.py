"""Builders of the hostile archive corpus (issue 12): backups that try to act on the host.

Every payload writes `id` and `env` into a canary file inside a fresh world-writable (1777)
directory under /tmp, so *any* user that runs it (root, the cluster user) leaves a trace,
and the trace shows whether sbtc-ops' secrets were visible. A payload that must outlive the
run starts `sleep <MARKER>` in its own session (setsid); the tests look for it in /proc.

Server-side payloads are plpgsql functions running `COPY … TO PROGRAM`. They are created on
the test's source server, where they must not fire: each checks a session setting
(`hostile.disarmed`) that only the builder's own session sets. A restore never sets it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sbtc_ops.pg import find_binaries
from tests.support.cli import CliResult, clean_env, communicate_sampling, sbtc_ops_executable
from tests.support.pg import SourceServer
from tests.support.pgtoc import move_before_data

DISARM = "SET hostile.disarmed = 'on'"
_ARMED = "current_setting('hostile.disarmed', true) IS DISTINCT FROM 'on'"
SLEEP_SECONDS = "987654"
CLUSTER_PREFIX = "sbtc-pg-"
VERIFY_PREFIX = "sbtc-ops-verify-"
BOMB_BYTES = 300 * 1024 * 1024
BOMB_LIMIT_BYTES = 120 * 1024 * 1024  # "never more than ~100 MB" staged by verify


# -- canaries and markers ----------------------------------------------------------------------


def world_writable_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that every user may write (sticky, like /tmp itself)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o1777)
    return path


@dataclass(frozen=True)
class Canary:
    """A file in `directory` that no payload may ever create."""

    directory: Path
    name: str

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def shell(self) -> str:
        """A shell command that records who ran it and with which environment."""
        return f"{{ id; env; }} > {self.path} 2>&1"


@dataclass(frozen=True)
class Secrets:
    """Random stand-ins for sbtc-ops' secrets, put in the environment of a verify run."""

    signer_key: str = field(default_factory=lambda: secrets.token_hex(32))
    s3_secret: str = field(default_factory=lambda: "s3-" + secrets.token_hex(16))
    pg_password: str = field(default_factory=lambda: "pg-" + secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {
            "SIGNER_SIGNER__PRIVATE_KEY": self.signer_key,
            "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": self.s3_secret,
            "PGPASSWORD": self.pg_password,
        }

    def markers(self) -> list[bytes]:
        return [value.encode() for value in (self.signer_key, self.s3_secret, self.pg_password)]


def files_under(root: Path) -> list[Path]:
    return [Path(d) / name for d, _, names in os.walk(root) for name in names]


def assert_canary_untouched(canary: Canary, markers: list[bytes], why: str) -> None:
    """The canary was never created, and no secret marker was written anywhere near it."""
    if os.path.lexists(canary.path):  # even a dangling symlink is a trace
        raise AssertionError(f"{why}: the payload ran: {canary.path}: {_head(canary.path)!r}")
    for path in files_under(canary.directory):
        leaked = [m.decode() for m in markers if m in _read(path)]
        assert not leaked, f"{why}: secrets {leaked} reached {path}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _head(path: Path) -> bytes:
    return _read(path)[:400]


# -- detached processes ------------------------------------------------------------------------


def sleep_marker() -> str:
    """A `sleep` argument unique to this session: GNU sleep takes a fraction."""
    return f"{SLEEP_SECONDS}.{secrets.randbelow(10**6):06d}"


def marker_processes(marker: str) -> list[int]:
    """Live processes running `sleep <marker>`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_marker_processes(marker: str) -> None:
    """Cleanup: the `sleep` processes our own payload started, each by its pid."""
    for pid in marker_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def await_marker_processes(marker: str, count: int, timeout_s: float = 60.0) -> list[int]:
    """The live `sleep <marker>` processes once exactly `count` of them run (or at the
    timeout): a detached shell's `setsid sleep` may still be starting when the command that
    forked it has returned, and a SIGKILLed one may take a moment to be gone."""
    deadline = time.monotonic() + timeout_s
    while len(found := marker_processes(marker)) != count and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition, bounded by the timeout
    return found


def detached_shell(marker: str) -> str:
    """A shell command that leaves a process in a session of its own behind."""
    return f"setsid sleep {marker} </dev/null >/dev/null 2>&1 &"


# -- server-side payloads ------------------------------------------------------------------------


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def payload_function(name: str, command: str, returns: str = "integer") -> str:
    """A volatile plpgsql function that runs `command` through COPY … TO PROGRAM when armed."""
    result = "NEW" if returns == "trigger" else ("NULL" if returns == "event_trigger" else "1")
    body = (
        f"BEGIN IF {_ARMED} THEN COPY (SELECT 1) TO PROGRAM {sql_literal(command)}; END IF; "
        + ("RETURN;" if returns == "event_trigger" else f"RETURN {result};")
        + " END"
    )
    return f"CREATE FUNCTION public.{name}() RETURNS {returns} LANGUAGE plpgsql AS $fn${body}$fn$"


def immutable_wrapper(name: str, payload: str, arg_type: str) -> str:
    """A function falsely declared IMMUTABLE (index and generated-column expressions demand
    it) that calls the volatile payload: COPY itself is refused in a non-volatile function."""
    return (
        f"CREATE FUNCTION public.{name}(v {arg_type}) RETURNS {arg_type} LANGUAGE plpgsql "
        f"IMMUTABLE AS $fn$BEGIN PERFORM public.{payload}(); RETURN v; END$fn$"
    )


@dataclass(frozen=True)
class Vector:
    """One way restored code gets run: the SQL that plants it (on a copy of the base signer
    DB), the names a foreign-object check must report, and an optional TOC rewrite."""

    name: str
    statements: Callable[[str], list[str]]  # shell command -> SQL
    objects: tuple[str, ...]  # names that `schema.identity` must mention
    before_data: tuple[str, str] | None = None  # (desc, tag) to move before the data


def _index(cmd: str) -> list[str]:
    return [
        payload_function("idx_payload", cmd),
        immutable_wrapper("idx_key", "idx_payload", "bytea"),
        "CREATE INDEX dkg_shares_hook_idx ON sbtc_signer.dkg_shares (public.idx_key(aggregate_key))",
    ]


def _matview(cmd: str) -> list[str]:
    return [
        payload_function("mv_payload", cmd),
        "CREATE MATERIALIZED VIEW public.dkg_summary AS "
        "SELECT count(*) AS n, public.mv_payload() AS hook FROM sbtc_signer.dkg_shares",
    ]


def _trigger(cmd: str) -> list[str]:
    return [
        payload_function("trg_payload", cmd, returns="trigger"),
        "CREATE TRIGGER dkg_shares_audit BEFORE INSERT ON sbtc_signer.dkg_shares "
        "FOR EACH ROW EXECUTE FUNCTION public.trg_payload()",
    ]


def _generated_default(cmd: str) -> list[str]:
    # A stored generated column: its expression is the column's default (pg_attrdef),
    # computed for every row the data load inserts.
    return [
        payload_function("col_payload", cmd),
        immutable_wrapper("col_default", "col_payload", "integer"),
        "ALTER TABLE sbtc_signer.dkg_shares ADD COLUMN audit_tag integer "
        "GENERATED ALWAYS AS (public.col_default(signature_share_threshold)) STORED",
    ]


def _event_trigger(cmd: str) -> list[str]:
    # pg_dump restores event triggers last; the drill's own DDL (pg_amcheck installing
    # amcheck) then fires it.
    return [
        payload_function("evt_payload", cmd, returns="event_trigger"),
        "CREATE EVENT TRIGGER sbtc_ddl_audit ON ddl_command_end "
        "EXECUTE FUNCTION public.evt_payload()",
    ]


VECTORS: dict[str, Vector] = {
    "index": Vector("index", _index, ("idx_payload",)),
    "matview": Vector("matview", _matview, ("mv_payload",)),
    "trigger": Vector(
        "trigger",
        _trigger,
        ("trg_payload",),
        before_data=("TRIGGER", "dkg_shares dkg_shares_audit"),
    ),
    "column-default": Vector("column-default", _generated_default, ("col_payload",)),
    "event-trigger": Vector("event-trigger", _event_trigger, ("evt_payload",)),
}

# Foreign objects that run nothing at restore: what `schema.identity` must name in
# an archive that otherwise restores cleanly. (statements, names to report, restorable by
# the owner of the database alone: a trusted extension may still be refused by a sandbox.)
INERT_OBJECTS: dict[str, tuple[list[str], tuple[str, ...], bool]] = {
    "function, trigger, materialized view, publication": (
        [
            "CREATE FUNCTION public.helper_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION public.touch_fn() RETURNS trigger LANGUAGE plpgsql "
            "AS $fn$BEGIN RETURN NEW; END$fn$",
            "CREATE TRIGGER dkg_shares_touch BEFORE UPDATE ON sbtc_signer.dkg_shares "
            "FOR EACH ROW EXECUTE FUNCTION public.touch_fn()",
            "CREATE MATERIALIZED VIEW public.dkg_counts AS "
            "SELECT count(*) AS n FROM sbtc_signer.dkg_shares",
            "CREATE PUBLICATION signer_pub FOR TABLE sbtc_signer.dkg_shares",
        ],
        ("helper_fn", "dkg_shares_touch", "dkg_counts", "signer_pub"),
        True,
    ),
    "trusted extension": (["CREATE EXTENSION pg_trgm"], ("pg_trgm",), False),
}


# -- building archives ---------------------------------------------------------------------------


def copy_database(server: SourceServer, template: str, name: str, statements: list[str]) -> None:
    """`name` = a copy of `template` changed by `statements`, run with payloads disarmed."""
    with server.connect("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER signer')
    with server.connect(name) as conn:
        conn.execute(DISARM)
        for statement in statements:
            conn.execute(statement)


def pg_dump(server: SourceServer, dbname: str, target: Path, fmt: str) -> Path:
    """pg_dump -F`fmt` of `dbname` as the superuser (so every object is dumped)."""
    argv = [
        str(find_binaries(tool_hint="pg_dump").pg_dump),
        f"--dbname={server.superuser_conninfo_for(dbname)}",
        f"--format={fmt}",
        f"--file={target}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return target


def vector_archive(
    server: SourceServer, base: str, vector: Vector, command: str, target: Path, fmt: str
) -> Path:
    """A custom (`c`) or directory (`d`) archive of the base DB carrying `vector`."""
    dbname = f"hostile_{vector.name.replace('-', '_')}_{fmt}_{secrets.token_hex(3)}"
    copy_database(server, base, dbname, vector.statements(command))
    pg_dump(server, dbname, target, fmt)
    if vector.before_data is not None:
        move_before_data(target, *vector.before_data)
    return target


# -- plain SQL ------------------------------------------------------------------------------------


def plain_with(clean_sql: Path, target: Path, appended: str) -> Path:
    """A copy of a clean plain dump with `appended` after its last line: after pg_dump 18's
    closing `\\unrestrict`, where a crafted file is free to put anything."""
    with clean_sql.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer)
        writer.write(b"\n" + appended.encode() + b"\n")
    return target


def search_path_trap(command: str) -> str:
    """An `evil` schema whose `=` on the DKG status enum runs `command`, put first in the
    database's search_path: the page's query (`… WHERE dkg_shares_status = 'verified'`)
    then calls it in every later session, e.g. the drill's own."""
    return "\n".join(
        [
            "CREATE SCHEMA evil;",
            "CREATE FUNCTION evil.status_eq(a sbtc_signer.dkg_shares_status, "
            "b sbtc_signer.dkg_shares_status) RETURNS boolean LANGUAGE plpgsql AS $fn$BEGIN "
            f"COPY (SELECT 1) TO PROGRAM {sql_literal(command)}; "
            "RETURN a::text = b::text; END$fn$;",
            "CREATE OPERATOR evil.= (LEFTARG = sbtc_signer.dkg_shares_status, "
            "RIGHTARG = sbtc_signer.dkg_shares_status, FUNCTION = evil.status_eq);",
            "DO $do$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = evil, "
            "pg_catalog, public', current_database()); END$do$;",
        ]
    )


# -- decompression bombs ----------------------------------------------------------------------------

_BOMB_HEADER = b"--\n-- PostgreSQL database dump\n--\n\n"
_BOMB_LINE = b" " * 65535 + b"\n"  # whitespace: psql would read every byte of it as SQL


def _bomb_chunks(total: int) -> Iterator[bytes]:
    yield _BOMB_HEADER
    block = _BOMB_LINE * 16  # 1 MiB
    for _ in range(total // len(block)):
        yield block


def gzip_bomb(target: Path, total: int = BOMB_BYTES) -> Path:
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as gz:
        for chunk in _bomb_chunks(total):
            gz.write(chunk)
    return target


def zstd_bomb(target: Path, total: int = BOMB_BYTES) -> Path:
    import zstandard

    with target.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as zw:
        for chunk in _bomb_chunks(total):
            zw.write(chunk)
    return target


# -- runs that are watched or interrupted ---------------------------------------------------------


def short_tmpdir(prefix: str = "sh-", mode: int = 0o711) -> Path:
    """A short TMPDIR for one run (unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(mode)
    return path


def staged_bytes(tmpdir: Path) -> int:
    """Bytes of regular files in `tmpdir`, leaving out throwaway clusters' own directories."""
    total = 0
    for directory, dirs, names in os.walk(tmpdir):
        dirs[:] = [d for d in dirs if not d.startswith(CLUSTER_PREFIX)]
        for name in names:
            with contextlib.suppress(OSError):
                total += (Path(directory) / name).lstat().st_size
    return total


@dataclass
class WatchedRun:
    result: CliResult
    peak_staged: int


def verify_watched(
    args: list[str], tmpdir: Path, state_dir: Path, cwd: Path, env: dict[str, str] | None = None
) -> WatchedRun:
    """`sbtc-ops verify ARGS… --json` with TMPDIR=`tmpdir`, sampling how much it stages."""
    full_env = clean_env(state_dir, {"TMPDIR": str(tmpdir), **(env or {})})
    proc = subprocess.Popen(
        [sbtc_ops_executable(), "verify", *args, "--json"],
        cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak = 0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, staged_bytes(tmpdir))

    stdout, stderr = communicate_sampling(proc, sample, timeout=120, every_s=0.02)
    return WatchedRun(CliResult(proc.returncode, stdout, stderr), peak)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren…)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def archive_copies(tmpdir: Path) -> list[Path]:
    """Files in `tmpdir` that hold a restorable archive in clear: a custom archive (PGDMP),
    a directory archive's toc.dat, or plain SQL from pg_dump."""
    found = []
    for path in files_under(tmpdir):
        try:
            with path.open("rb") as handle:
                head = handle.read(64)
        except OSError:
            continue
        if head.startswith(b"PGDMP") or b"PostgreSQL database dump" in head:
            found.append(path)
    return found


def make_stale_cluster_dirs(tmpdir: Path, run_as_uid: int, run_as_gid: int) -> Path:
    """What a process of the cluster user can leave in TMPDIR: a stale `sbtc-pg-*` directory
    whose owner.pid is a FIFO (reading it blocks forever), and a `sbtc-pg-*` symlink to a
    directory that looks stale too and holds a sentinel file. Returns the sentinel."""
    stale = tmpdir / f"{CLUSTER_PREFIX}fifo0001"
    stale.mkdir(mode=0o700)
    os.mkfifo(stale / "owner.pid", 0o600)
    os.chown(stale / "owner.pid", run_as_uid, run_as_gid)
    os.chown(stale, run_as_uid, run_as_gid)
    target = Path(tempfile.mkdtemp(prefix="sbtc-sentinel-", dir="/tmp"))
    (target / "owner.pid").write_text(f"{_unused_pid()}\n")
    sentinel = target / "sentinel"
    sentinel.write_text("must survive\n")
    (tmpdir / f"{CLUSTER_PREFIX}link0001").symlink_to(target, target_is_directory=True)
    return sentinel


def _unused_pid() -> int:
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    pid = limit - 1
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
