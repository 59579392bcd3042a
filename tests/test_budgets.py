"""The drill's budgets (issue 21): an archive cannot make `verify` consume unbounded disk,
memory, processes or time.

One archive per budget, each built here from a small signer database plus one hostile part,
verified by a real `sbtc-ops verify --json` process with small budgets (so each case takes
seconds and never fills the disk). For each: the drill ends by itself with the verdict
`over-budget` and a failing `drill.budget` naming the resource; what it used stays within
the budget plus a stated tolerance (sampled from outside while it runs); no postgres and
nothing in its temporary directory survives (Verifier-style checks). The process and memory
limits of the sandbox are tested on the sandbox directly (a restore cannot fork: the restore
role runs no program).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.config import Settings
from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.history import JobName
from sbtc_ops.pg.limits import Limits, ProcessLimits, Watchdog, allocated_bytes, cgroups_of
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.serve.jobs import job_specs
from sbtc_ops.verify.budget import MIB, SERVE_GRACE_S, DrillBudget
from tests.support.cli import CliResult, clean_env, sbtc_ops_executable
from tests.support.hostile import _ARMED, copy_database, pg_dump, plain_with, short_tmpdir
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.verify import FAST_CHAIN_ENV, copy_schema_references, pin_schema

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

BASE_DB = "budget_base"
DISK_BUDGET_MB = 200
# How far past the disk budget a run may get before the watchdog (50 ms ticks) kills it.
DISK_TOLERANCE_MB = 300
SMALL = {
    "SBTC_OPS_VERIFY__DISK_MIN_MB": str(DISK_BUDGET_MB),
    "SBTC_OPS_VERIFY__DISK_FACTOR": "1",
    "SBTC_OPS_VERIFY__DISK_RESERVE_MB": "1024",
    "SBTC_OPS_VERIFY__DEADLINE_MIN_S": "60",
    "SBTC_OPS_VERIFY__DEADLINE_S_PER_GB": "0",
    "SBTC_OPS_VERIFY__DEADLINE_MAX_S": "60",
    "SBTC_OPS_VERIFY__MEMORY_MB": "1024",
}


# -- a verify run watched from outside -----------------------------------------------------------


@dataclass
class BudgetRun:
    result: CliResult
    peak_disk: int  # bytes allocated in the run's TMPDIR, sampled every 20 ms
    root_hwm: int  # VmHWM of the sbtc-ops process (bytes), last sample before it exited

    @property
    def doc(self) -> dict[str, Any]:
        document = json.loads(self.result.stdout)
        assert isinstance(document, dict)
        return document

    def check(self, check_id: str) -> dict[str, Any]:
        found = [c for c in self.doc["checks"] if c["id"] == check_id]
        assert len(found) == 1, self.context
        return dict(found[0])

    @property
    def context(self) -> str:
        return f"stdout={self.result.stdout[-3000:]!r} stderr={self.result.stderr[-2000:]!r}"

    def expect_over_budget(self, resource: str) -> dict[str, Any]:
        assert self.result.code == 1, self.context
        assert self.doc["verdict"] == "over-budget", self.context
        budget = self.check("drill.budget")
        assert budget["status"] == "fail", self.context
        assert budget["data"]["resource"] == resource, self.context
        assert budget["remediation"]
        assert self.doc["budgets"]["breach"]["resource"] == resource
        return budget


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def watched_verify(
    workdir: Path,
    archive: Path,
    key: str,
    env: dict[str, str] | None = None,
    reference_from: Path | None = None,
) -> BudgetRun:
    """`sbtc-ops verify ARCHIVE --expected-key KEY --json` in a fresh TMPDIR and state dir,
    sampling its disk use and its memory high-water mark; then nothing may be left."""
    tmpdir = short_tmpdir("sb-")
    state = Path(workdir / f"state-{time.monotonic_ns()}")
    if reference_from is not None:  # the generated DB's own schema vouches for its dumps
        state.mkdir()
        copy_schema_references(reference_from, state)
    full_env = clean_env(state, {"TMPDIR": str(tmpdir), **FAST_CHAIN_ENV, **SMALL, **(env or {})})
    argv = [sbtc_ops_executable(), "verify", str(archive), "--expected-key", key, "--json"]
    proc = subprocess.Popen(
        argv, cwd=workdir, env=full_env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak_disk, hwm = 0, 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_disk, hwm
        while not done.is_set():
            peak_disk = max(peak_disk, allocated_bytes(tmpdir))
            hwm = max(hwm, _vm_hwm(proc.pid) or 0)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        done.set()
        sampler.join()
    try:
        assert "Traceback" not in stderr, stderr
        assert_no_postgres_left(tmpdir)
        leftovers = sorted(p.name for p in tmpdir.iterdir())
        assert not leftovers, f"verify left {leftovers} in its temporary directory"
        assert cgroups_of(proc.pid) == [], "verify left its cgroups behind"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return BudgetRun(CliResult(proc.returncode, stdout, stderr), peak_disk, hwm)


# -- the corpus ---------------------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    server: SourceServer
    facts: GeneratedDb
    clean_custom: Path
    clean_plain: Path
    reference: Path  # a state directory holding the base database's pinned schema

    @property
    def key(self) -> str:
        return self.facts.newest_verified_key.hex()

    def variant(self, name: str, statements: list[str]) -> Path:
        """A custom archive of the base database changed by `statements` (payloads
        disarmed while they are built); the copy is dropped once dumped."""
        dbname = f"budget_{name}"
        copy_database(self.server, BASE_DB, dbname, statements)
        try:
            return pg_dump(self.server, dbname, self.root / f"{name}.dump", "c")
        finally:
            with self.server.connect("postgres") as conn:
                conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')

    def run(self, archive: Path, env: dict[str, str] | None = None) -> BudgetRun:
        return watched_verify(self.root, archive, self.key, env, self.reference)


@pytest.fixture(scope="module")
def corpus(source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("budgets")
    url, facts = new_signer_database(source_server, target_mb=0.1, seed=21, dbname=BASE_DB)
    reference = root / "reference-state"
    pin_schema(url, reference)
    return Corpus(
        root,
        source_server,
        facts,
        pg_dump(source_server, BASE_DB, root / "clean.dump", "c"),
        pg_dump(source_server, BASE_DB, root / "clean.sql", "p"),
        reference,
    )


@pytest.fixture(scope="module")
def clean_run(corpus: Corpus) -> BudgetRun:
    return corpus.run(corpus.clean_custom)


# -- a clean backup: within budget, and the budgets reported -----------------------------------------


def test_a_clean_backup_matches_within_its_budgets(clean_run: BudgetRun) -> None:
    run = clean_run
    assert run.result.code == 0, run.context
    assert run.doc["verdict"] == "match"
    assert run.check("drill.budget")["status"] == "pass"
    budgets = run.doc["budgets"]
    assert budgets["breach"] is None
    assert budgets["disk"]["budget_bytes"] == DISK_BUDGET_MB * MIB
    assert 0 < budgets["disk"]["peak_bytes"] <= budgets["disk"]["budget_bytes"]
    assert budgets["memory"]["budget_bytes"] == 1024 * MIB
    assert budgets["memory"]["root_peak_bytes"] > 0
    assert budgets["time"]["deadline_s"] == 60
    assert any(layer.startswith("rlimits") for layer in budgets["layers"])
    if Path("/sys/fs/cgroup/memory").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert any(layer.startswith("cgroup") for layer in budgets["layers"]), budgets
    # the terminal report says it too
    assert "limits:" in run.check("drill.budget")["detail"]


# -- disk ---------------------------------------------------------------------------------------------

# 132 bytes of SQL that write without end (issue 21): 1000-byte rows are stored as written.
DISK_FILL = (
    "CREATE TABLE public.fill (v text);\n"
    "INSERT INTO public.fill SELECT repeat('x', 1000) FROM generate_series(1, 1000000000);"
)


def test_a_plain_dump_that_fills_the_disk_is_stopped_at_the_disk_budget(corpus: Corpus) -> None:
    archive = plain_with(corpus.clean_plain, corpus.root / "fill.sql", DISK_FILL)
    run = corpus.run(archive)
    budget = run.expect_over_budget("disk")
    assert budget["data"]["limit"] == DISK_BUDGET_MB * MIB
    assert run.peak_disk <= (DISK_BUDGET_MB + DISK_TOLERANCE_MB) * MIB, run.peak_disk
    assert run.doc["budgets"]["disk"]["peak_bytes"] > DISK_BUDGET_MB * MIB


def test_pg_dump_internal_compression_counts_against_the_disk_budget(corpus: Corpus) -> None:
    # ~300 MB of rows that pg_dump compresses to about a megabyte.
    archive = corpus.variant(
        "compressed",
        [
            "CREATE TABLE public.bulk AS SELECT g AS id, repeat('y', 250) AS v "
            "FROM generate_series(1, 1100000) AS g"
        ],
    )
    assert archive.stat().st_size < 8 * MIB
    run = corpus.run(archive)
    run.expect_over_budget("disk")
    assert run.peak_disk <= (DISK_BUDGET_MB + DISK_TOLERANCE_MB) * MIB, run.peak_disk


def test_the_disk_budget_keeps_the_free_space_reserve(corpus: Corpus) -> None:
    # A reserve larger than the volume's free space: the very first sample breaches it.
    free_mb = shutil.disk_usage("/tmp").free // MIB
    run = corpus.run(corpus.clean_custom, {"SBTC_OPS_VERIFY__DISK_RESERVE_MB": str(free_mb + 1024)})
    budget = run.expect_over_budget("disk")
    assert "left free on the volume" in budget["detail"]


# -- time ---------------------------------------------------------------------------------------------

# A function that sleeps unless the builder's session disarmed it (hostile.py's convention).
SLEEPER = (
    "CREATE FUNCTION public.slow(v integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS "
    f"$fn$BEGIN IF {_ARMED} THEN PERFORM pg_catalog.pg_sleep(3600); END IF; RETURN v; END$fn$"
)


def test_a_sleeping_index_expression_is_stopped_at_the_deadline(corpus: Corpus) -> None:
    archive = corpus.variant(
        "slow_index",
        [
            SLEEPER,
            "CREATE TABLE public.t (id integer)",
            "INSERT INTO public.t VALUES (1)",
            "CREATE INDEX t_slow ON public.t (public.slow(id))",
        ],
    )
    run = corpus.run(archive, {"SBTC_OPS_VERIFY__DEADLINE_MIN_S": "20"})
    budget = run.expect_over_budget("time")
    assert "deadline" in budget["detail"]
    assert run.doc["budgets"]["time"]["deadline_s"] == 20


def test_a_sleeping_row_security_policy_is_stopped_by_the_query_timeout(corpus: Corpus) -> None:
    # Built-ins only: nothing here is a function, trigger or extension of the archive's own.
    archive = corpus.variant(
        "slow_policy",
        [
            "ALTER TABLE sbtc_signer.dkg_shares ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE sbtc_signer.dkg_shares FORCE ROW LEVEL SECURITY",
            "CREATE POLICY slow ON sbtc_signer.dkg_shares "
            "USING (pg_catalog.pg_sleep(3600) IS NOT NULL)",
        ],
    )
    run = corpus.run(archive, {"SBTC_OPS_VERIFY__QUERY_TIMEOUT_S": "5"})
    budget = run.expect_over_budget("time")
    assert "query timeout" in budget["detail"]


def test_without_a_query_timeout_the_deadline_still_ends_the_checks(corpus: Corpus) -> None:
    archive = corpus.variant(
        "slow_policy_2",
        [
            "ALTER TABLE sbtc_signer.dkg_shares ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE sbtc_signer.dkg_shares FORCE ROW LEVEL SECURITY",
            "CREATE POLICY slow ON sbtc_signer.dkg_shares "
            "USING (pg_catalog.pg_sleep(3600) IS NOT NULL)",
        ],
    )
    run = corpus.run(archive, {"SBTC_OPS_VERIFY__DEADLINE_MIN_S": "25"})
    run.expect_over_budget("time")


# -- memory of the root process -------------------------------------------------------------------

OVERSIZED_ROWS = 4
OVERSIZED_MB = 32


def test_oversized_dkg_rows_are_a_finding_not_memory(corpus: Corpus, clean_run: BudgetRun) -> None:
    statements = [
        "CREATE TEMP TABLE extra AS SELECT * FROM sbtc_signer.dkg_shares "
        "ORDER BY created_at LIMIT 1",
        *[
            "INSERT INTO sbtc_signer.dkg_shares SELECT "
            f"'\\x02'::bytea || pg_catalog.sha256('{i}'::bytea), tweaked_aggregate_key, "
            "encrypted_private_shares, public_shares, script_pubkey, "
            f"ARRAY[pg_catalog.convert_to(repeat('a', {OVERSIZED_MB << 20}), 'UTF8')], "
            "signature_share_threshold, created_at - interval '1 day', 'failed', "
            "started_at_bitcoin_block_hash, started_at_bitcoin_block_height FROM extra"
            for i in range(OVERSIZED_ROWS)
        ],
    ]
    archive = corpus.variant("oversized", statements)
    run = corpus.run(archive)
    budget = run.expect_over_budget("memory")
    assert "signer_set_public_keys" in budget["detail"]
    # The values (4 x 32 MiB) never reached the root process: its high-water mark stays
    # within a few MB of a clean run's.
    assert clean_run.root_hwm > 0 and run.root_hwm > 0
    assert run.root_hwm < clean_run.root_hwm + 48 * MIB, (run.root_hwm, clean_run.root_hwm)


# -- the sandbox's process and memory limits ---------------------------------------------------------


SYSTEM_PYTHON = "/usr/bin/python3"  # runnable by the sandbox user (a venv or pyenv may not be)


@pytest.fixture
def limits() -> Iterator[Limits]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no {SYSTEM_PYTHON}")
    run_as = resolve_run_as(None)
    made = Limits.create(ProcessLimits(256 * MIB, 24, 64 * MIB), run_as.uid)
    try:
        yield made
    finally:
        made.close()
        for directory in made.cgroups.directories():
            assert not directory.exists(), f"{directory} outlived the drill"


def _watchdog(limits: Limits, directory: Path) -> Watchdog:
    return Watchdog(
        limits,
        disk_bytes=1 << 40,
        reserve_bytes=0,
        deadline=time.monotonic() + 3600,
        directories=[directory],
    )


FORKER = """
import os, time
started = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(started, flush=True)
time.sleep(60)
"""


def test_the_sandbox_cannot_run_more_processes_than_its_budget(
    limits: Limits, tmp_path: Path
) -> None:
    if limits.cgroups.pids is None:
        pytest.skip("no writable pids cgroup here (RLIMIT_NPROC only; see docs/threat-model.md)")
    sandbox = Sandbox(resolve_run_as(None), limits=limits)
    proc = sandbox.popen([SYSTEM_PYTHON, "-c", FORKER], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        started = int(proc.stdout.readline())  # the loop ran to its end
        # Every fork over the budget was refused; nothing ever ran beyond it.
        assert started < 24
        assert limits.cgroups.refused_forks() > 0
        current = limits.cgroups.pids_current()
        assert current is not None and current <= 24
        watchdog = _watchdog(limits, tmp_path)
        breach = watchdog.check_now()
        assert breach is not None and breach.resource == "processes"
        proc.wait(timeout=60)  # the breach killed the whole container
    finally:
        sandbox.kill(proc)
        proc.wait()
    # (the fixture then checks that the cgroup could be removed: nothing is left in it)


def test_the_sandbox_cannot_use_more_memory_than_its_budget(limits: Limits, tmp_path: Path) -> None:
    python = SYSTEM_PYTHON
    sandbox = Sandbox(resolve_run_as(None), limits=limits)
    # One process past the budget: its own address space limit refuses the allocation.
    done = sandbox.run([python, "-c", "b = b'x' * (400 << 20)"], timeout_s=120)
    assert done.returncode != 0 and "MemoryError" in done.stderr
    if limits.cgroups.memory is None:
        pytest.skip("no writable memory cgroup here (rlimits only)")
    # Three processes, each within its own limit, together past it: the cgroup stops them.
    hog = "import time; b = b'x' * (150 << 20); time.sleep(60)"
    script = f'for i in 1 2 3; do "{python}" -c "{hog}" & done; wait'
    proc = sandbox.popen(["/bin/sh", "-c", script], stderr=subprocess.DEVNULL)
    watchdog = _watchdog(limits, tmp_path).start()
    try:
        proc.wait(timeout=120)  # ended by the watchdog once the kernel killed one of them
    finally:
        watchdog.stop()
        sandbox.kill(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    assert watchdog.breach is not None and watchdog.breach.resource == "memory"
    peak = limits.cgroups.memory_peak()
    assert peak is not None and peak <= 256 * MIB


def test_the_watchdog_counts_allocated_blocks_of_sparse_and_dense_files(tmp_path: Path) -> None:
    dense = tmp_path / "dense"
    dense.write_bytes(os.urandom(1 << 20))
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB long, nothing allocated
    used = allocated_bytes(tmp_path)
    assert 1 << 20 <= used < 8 << 20


# -- the numbers ------------------------------------------------------------------------------------


def test_budgets_scale_with_the_archive_within_their_bounds() -> None:
    settings = Settings().verify
    tiny = DrillBudget.for_archive(settings, 1 << 20)
    assert tiny.disk_bytes == settings.disk_min_mb * MIB
    assert settings.deadline_min_s <= tiny.deadline_s < settings.deadline_min_s + 5
    signer = DrillBudget.for_archive(settings, 10 * 10**9)  # a 50 GB signer DB's archive
    assert signer.disk_bytes == 20 * 10 * 10**9
    assert signer.deadline_s == settings.deadline_min_s + 10 * settings.deadline_s_per_gb
    huge = DrillBudget.for_archive(settings, 100 * 10**9)
    assert huge.deadline_s == settings.deadline_max_s
    assert signer.query_timeout_s == settings.query_timeout_s
    capped = DrillBudget.for_archive(settings.model_copy(update={"disk_max_mb": 1024}), 10 * 10**9)
    assert capped.disk_bytes == 1024 * MIB


def test_serve_stops_a_verify_job_only_after_the_longest_drill_deadline() -> None:
    settings = Settings.model_validate(
        {"serve": {"verify_rotate_cron": "0 3 * * 0"}, "verify": {"deadline_max_s": 7200}}
    )
    timeouts = {spec.name: spec.timeout_s for spec in job_specs(settings)}
    assert timeouts[JobName.VERIFY] == timeouts[JobName.VERIFY_ROTATE] == 7200 + SERVE_GRACE_S


def test_a_restores_error_output_is_read_in_bounded_pieces() -> None:
    import io

    from sbtc_ops.backup.pgrestore import MAX_ERRORS_KEPT, MAX_LINE, read_errors

    noise = b"psql:<stdin>:1: ERROR:  " + b"x" * (4 << 20) + b"\n"  # one 4 MiB line
    lines = b"".join(b"psql:<stdin>:%d: ERROR:  boom\n" % i for i in range(5000))
    tail = b"pg_restore: warning: errors ignored on restore: 5001\n"
    errors, ignored = read_errors(io.BytesIO(noise + lines + tail))
    assert ignored == "5001"
    assert len(errors) == MAX_ERRORS_KEPT + 1
    assert errors[-1] == f"… and {5001 - MAX_ERRORS_KEPT} more error line(s)"
    assert all(len(line) <= MAX_LINE for line in errors)
