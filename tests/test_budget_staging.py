"""The drill's deadline ends staging too (issue 21): the copy of the archive, its decryption
and its decompression, not only the restore and the checks.

Each case runs a real `sbtc-ops verify --json` whose staging never ends by itself: a pipe
the operator named that sends a few bytes and then nothing (`verify <(…)`), and a
decryption child or a decompressor that stops making progress (frozen with SIGSTOP once
seen, as a hostile input or a stuck disk would leave it). The drill must end by itself at its
deadline — the test's timeout is the bound, no timing is asserted — with the verdict
`over-budget` naming the time, the stuck child killed, and nothing left: no process, no
staging or cluster directory, no cgroup.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zstandard

from sbtc_ops.pg.limits import cgroups_of
from tests.support.cli import clean_env, sbtc_ops_executable
from tests.support.hostile import descendants, process_comm, short_tmpdir
from tests.support.pg import assert_no_postgres_left
from tests.support.verify import FAST_CHAIN_ENV

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

DEADLINE_S = 45  # covers starting the cluster on a loaded host; staging stalls after it
EXPECTED_KEY = "02" + "11" * 32
PLAIN_SQL = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"


def _deadline(seconds: int) -> dict[str, str]:
    return {
        "SBTC_OPS_VERIFY__DEADLINE_MIN_S": str(seconds),
        "SBTC_OPS_VERIFY__DEADLINE_MAX_S": str(seconds),
        "SBTC_OPS_VERIFY__DEADLINE_S_PER_GB": "0",
        "SBTC_OPS_VERIFY__DISK_RESERVE_MB": "1024",
        "SBTC_OPS_VERIFY__MEMORY_MB": "1024",
    }


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    frozen: int | None  # the child frozen mid-way, if any

    @property
    def doc(self) -> dict[str, Any]:
        document = json.loads(self.stdout)
        assert isinstance(document, dict)
        return document

    def expect_over_time(self) -> None:
        context = f"stdout={self.stdout[-3000:]!r} stderr={self.stderr[-2000:]!r}"
        assert self.code == 1, context
        assert self.doc["verdict"] == "over-budget", context
        budget = next(c for c in self.doc["checks"] if c["id"] == "drill.budget")
        assert budget["status"] == "fail" and budget["data"]["resource"] == "time", context
        assert "deadline" in budget["detail"], context
        assert self.doc["budgets"]["breach"]["resource"] == "time"
        assert "Traceback" not in self.stderr


@pytest.fixture
def tmpdir() -> Iterator[Path]:
    path = short_tmpdir("bst-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def verify(
    archive: Path,
    tmpdir: Path,
    env: dict[str, str],
    *args: str,
    freeze: Callable[[int], bool] | None = None,
    during: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Run:
    """Run verify on `archive` with TMPDIR `tmpdir`; with `freeze`, the first process below
    it that matches is frozen (SIGSTOP) as soon as it is seen; `during` is called while it
    runs. Afterwards nothing of the run may be left: process, directory or cgroup."""
    state = tmpdir.parent / f"{tmpdir.name}-state"
    argv = [sbtc_ops_executable(), "verify", str(archive), "--expected-key", EXPECTED_KEY]
    proc = subprocess.Popen(
        [*argv, *args, "--json"],
        cwd=tmpdir,
        env=clean_env(state, {"TMPDIR": str(tmpdir), **FAST_CHAIN_ENV, **env}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    frozen = None
    try:
        if freeze is not None:
            frozen = _freeze_first(proc, freeze)
        if during is not None:
            during(proc)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if frozen is not None and Path(f"/proc/{frozen}").exists():
            os.kill(frozen, signal.SIGCONT)  # only ever reached when the test fails
        shutil.rmtree(state, ignore_errors=True)
    if frozen is not None:
        assert not Path(f"/proc/{frozen}").exists(), "the frozen child outlived the drill"
    assert_no_postgres_left(tmpdir)
    leftovers = sorted(p.name for p in tmpdir.iterdir())
    assert not leftovers, f"verify left {leftovers} in its temporary directory"
    assert cgroups_of(proc.pid) == [], "verify left its cgroups behind"
    return Run(proc.returncode, stdout, stderr, frozen)


def _first_below(proc: subprocess.Popen[str], match: Callable[[int], bool]) -> int:
    while True:
        found = [pid for pid in descendants(proc.pid) if match(pid)]
        if found:
            return found[0]
        assert proc.poll() is None, "verify ended before the process looked for was seen"
        time.sleep(0.005)  # polling a condition: the process works for a second or more


def _freeze_first(proc: subprocess.Popen[str], match: Callable[[int], bool]) -> int:
    pid = _first_below(proc, match)
    os.kill(pid, signal.SIGSTOP)
    return pid


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# -- the copy: a pipe that sends a little, then nothing ------------------------------------------------


def stalled_pipe(tmpdir: Path, env: dict[str, str], during: Any = None) -> Run:
    """verify of a pipe that sends the first bytes of a gzip file, then nothing."""
    source = tmpdir.parent / f"{tmpdir.name}-in"
    source.mkdir()
    fifo = source / "dump.sql.gz"
    os.mkfifo(fifo, 0o600)
    # Both ends held here: open() does not wait for a writer, and the reader never sees EOF.
    held = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(held, gzip.compress(PLAIN_SQL * 100)[:200])
        return verify(fifo, tmpdir, env, during=during)
    finally:
        os.close(held)
        shutil.rmtree(source)


def test_a_pipe_that_stops_sending_is_ended_at_the_deadline(tmpdir: Path) -> None:
    """`verify <(curl …)` where the far end stalls: the copy (in sbtc-ops itself, no child
    to kill) waits on the pipe, and the deadline stops it."""
    run = stalled_pipe(tmpdir, _deadline(10))
    run.expect_over_time()
    assert run.doc["budgets"]["time"]["deadline_s"] == 10


# -- the cluster runs in the drill's cgroup, with the budget's limits ------------------------------------


def _is_postmaster(pid: int) -> bool:
    argv = _cmdline(pid).split(b"\0")
    probes = {b"--boot", b"--single", b"--check", b"-C", b"-V", b"--version"}
    return process_comm(pid) == "postgres" and b"-D" in argv and not probes & set(argv)


def cgroup_limits(pid: int) -> dict[str, str]:
    """The memory and pids limits of the cgroups `pid` is in (v2: memory.max and pids.max
    of one directory; v1: memory.limit_in_bytes and pids.max of each hierarchy), with the
    directories' names."""
    root = Path("/sys/fs/cgroup")
    unified = (root / "cgroup.controllers").exists()
    found: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if unified and number == "0":
            where = root / path.lstrip("/")
            found["memory"] = (where / "memory.max").read_text().strip()
            found["pids"] = (where / "pids.max").read_text().strip()
            found["name"] = where.name
        elif not unified and controllers in ("memory", "pids"):
            where = root / controllers / path.lstrip("/")
            name = "memory.limit_in_bytes" if controllers == "memory" else "pids.max"
            found[controllers] = (where / name).read_text().strip()
            found[f"{controllers}.name"] = where.name
    return found


def test_the_drills_cluster_runs_in_its_cgroup_with_the_budgets_limits(tmpdir: Path) -> None:
    """Where a cgroup is writable (v2 with memory and pids delegated, else v1's memory and
    pids hierarchies), the server the drill starts is in the drill's own cgroup, limited
    as the budget says (verify.memory_mb, verify.max_processes)."""
    seen: dict[str, str] = {}

    def look(proc: subprocess.Popen[str]) -> None:
        # The running server, not one of initdb's short-lived postgres runs (--boot,
        # --single, --check, -C): those may be gone before their cgroups are read.
        postgres = _first_below(proc, _is_postmaster)
        seen.update(cgroup_limits(postgres))

    # The pipe holds the drill until its deadline: long enough that the server is looked at
    # while it runs, not as the breach kills it (a dying process has left its cgroups).
    env = {**_deadline(DEADLINE_S), "SBTC_OPS_VERIFY__MAX_PROCESSES": "48"}
    run = stalled_pipe(tmpdir, env, during=look)
    run.expect_over_time()
    layers = run.doc["budgets"]["layers"]
    if not any(layer.startswith("cgroup") for layer in layers):
        pytest.skip(f"no writable cgroup on this host: limits in force {layers}")
    assert seen["memory"] == str(1024 << 20), seen
    assert seen["pids"] == "48", seen
    assert all(seen[key].startswith("sbtc-ops-") for key in seen if key.endswith("name")), seen


# -- staging's children: decryption and decompression --------------------------------------------------


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pyrage.x25519.Identity]:
    key = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("id") / "identity.txt"
    path.write_text(f"{key}\n")
    path.chmod(0o600)
    return path, key


class _Zeros(io.RawIOBase):
    """A plain dump's first line, then zeros: `size` bytes in all, nothing held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.head = PLAIN_SQL

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.left, 1 << 20)
        data = (self.head + bytes(size))[:size]
        self.head = b""
        buffer[:size] = data
        self.left -= size
        return size


@pytest.fixture(scope="module")
def encrypted(
    tmp_path_factory: pytest.TempPathFactory, identity: tuple[Path, pyrage.x25519.Identity]
) -> Path:
    """512 MiB of age ciphertext: its decryption runs long enough to be caught."""
    path = tmp_path_factory.mktemp("age") / "signer.sql.age"
    with path.open("wb") as out:
        pyrage.encrypt_io(io.BufferedReader(_Zeros(512 << 20)), out, [identity[1].to_public()])
    return path


def test_a_decryption_that_stalls_is_killed_at_the_deadline(
    tmpdir: Path, encrypted: Path, identity: tuple[Path, pyrage.x25519.Identity]
) -> None:
    def decryptor(pid: int) -> bool:
        return b"sbtc_ops.backup.agedecrypt" in _cmdline(pid)

    run = verify(
        encrypted,
        tmpdir,
        {**_deadline(DEADLINE_S), "SBTC_OPS_VERIFY__DISK_MIN_MB": "4096"},
        "--identity",
        str(identity[0]),
        freeze=decryptor,
    )
    run.expect_over_time()


@pytest.fixture(scope="module")
def zstd_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 GiB of a plain dump's zeros in a few hundred KB of zstd."""
    path = tmp_path_factory.mktemp("zst") / "signer.sql.zst"
    with path.open("wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as writer:
        shutil.copyfileobj(io.BufferedReader(_Zeros(4 << 30)), writer, 1 << 20)
    return path


def test_a_decompression_that_stalls_is_killed_at_the_deadline(
    tmpdir: Path, zstd_bomb: Path
) -> None:
    """Within every size cap (the expansion and disk budgets hold the 4 GiB), the
    decompressor stops making progress: the deadline kills it, in the sandbox."""
    assert zstd_bomb.stat().st_size < 4 << 20

    def decompressor(pid: int) -> bool:
        return process_comm(pid) == "zstd"

    env = {
        **_deadline(DEADLINE_S),
        "SBTC_OPS_VERIFY__DISK_MIN_MB": "8192",
        "SBTC_OPS_BACKUP__MAX_EXPANDED_MB": "8192",
    }
    run = verify(zstd_bomb, tmpdir, env, freeze=decompressor)
    run.expect_over_time()
