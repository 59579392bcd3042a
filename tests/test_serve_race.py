"""`serve`'s first start with same-day backups present: the catch-up backup (with its prune),
the catch-up verify-rotate, and the DKG watch's backups all start at once. No job may pull a
backup from under another: every run ends ok, no traceback anywhere, and the status page
lists only backups that exist.

Retention keeps one backup a day, so the catch-up backup's prune wants to delete exactly the
older same-day backup verify-rotate picks (never verified, oldest first).
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sbtc_ops.config import Settings
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.serve.jobs import job_specs
from sbtc_ops.serve.scheduler import JobContext, JobResult, JobSpec, one_line_reason
from sbtc_ops.state import Run, StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import clean_env, run_cli
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.serve import NO_JOBS, Daemon, running_daemon, wait_until, write_config
from tests.support.verify import private_tmpdir, serve_facts
from tests.test_serve_dkg import insert_round

pytestmark = [pytest.mark.timeout(300)]

JOBS = ("backup", "verify", "verify-rotate", "dkg-backup")


@pytest.fixture
def run_tmp() -> Iterator[Path]:
    path = private_tmpdir("srace-")
    try:
        yield path
        assert_no_postgres_left(under=path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def finished(daemon: Daemon) -> dict[str, list[Run]]:
    runs = daemon.runs()
    return {job: [r for r in runs if r.job == job and r.outcome != "running"] for job in JOBS}


def settled(daemon: Daemon) -> bool:
    """Every job has run, nothing runs now, and no job is still due (a backup asked for by
    the DKG watch and its verify included)."""
    done = finished(daemon)
    if not all(done[job] for job in JOBS) or any(r.outcome == "running" for r in daemon.runs()):
        return False
    last_dkg = max(r.started_at for r in done["dkg-backup"])
    last_backup = max(r.started_at for r in done["backup"])
    # The watch asks for a full backup right after its DKG backup; that one's verify ends it.
    return last_backup > last_dkg and any(r.started_at > last_backup for r in done["verify"])


def quiet(daemon: Daemon) -> bool:
    """Settled, and nothing left to start: the status page's schedule has no job due before
    the next minute, and the DKG tile says the newest shares are in a backup (so the watch
    asks for nothing more). Read from the daemon, not waited for."""
    if not settled(daemon):
        return False
    page = daemon.get("/")[1]
    if "DKG shares: OK" not in page:
        return False
    table = page[page.index("id='schedule'") :]
    table = table[: table.index("</table>")]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for row in table.split("<tr>")[2:]:  # after the header row
        next_run = re.findall(r"<td>(.*?)</td>", row)[3]  # job, outcome, last run, next run
        if next_run == "on demand":
            continue
        due = datetime.strptime(next_run, "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
        if due <= now:
            return False
    return settled(daemon)


@pytest.mark.postgres
def test_first_start_with_same_day_backups_has_no_job_failure(
    tmp_path: Path, source_server: SourceServer, run_tmp: Path
) -> None:
    url, facts = new_signer_database(source_server, target_mb=1.0, seed=94)
    state = tmp_path / "state"
    env = clean_env(state, {"TMPDIR": str(run_tmp)})
    with FakeStacksNode(deployer=facts.deployer) as node:
        serve_facts(node, facts)
        config = write_config(
            tmp_path / "sbtc-ops.toml",
            {
                "db": {"url": url},
                "backup": {"local_dir": str(tmp_path / "repo")},
                "backup.retention": {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0},
                "stacks": {"endpoints": [node.url], "retries": 0},
                "serve": {
                    **NO_JOBS,
                    "backup_cron": "17 3 * * *",
                    "verify_rotate_cron": "0 4 * * 0",
                    "dkg_watch": True,
                    "dkg_poll_interval_s": 1.0,
                },
            },
        )
        for _ in range(3):  # same-day backups, taken before the daemon ever ran
            taken = run_cli("--config", str(config), "backup", cwd=tmp_path, env=env)
            assert taken.code == 0, taken.stderr
        insert_round(source_server, url.rsplit("/", 1)[1])  # the DKG watch has work at once
        with running_daemon(config, state, {"TMPDIR": str(run_tmp)}) as daemon:
            wait_until(lambda: quiet(daemon), 240, daemon.describe)
            page = daemon.get("/")[1]
            stderr = "".join(daemon.stderr)
            assert daemon.terminate() == 0
    runs = finished(daemon)
    failures = [(r.job, r.outcome, r.data.get("summary")) for rs in runs.values() for r in rs
                if r.outcome != "ok"]  # fmt: skip
    assert failures == [], failures
    assert "Traceback" not in stderr
    # A backup (with its prune) never ran beside the verify-rotate.
    (rotated,) = runs["verify-rotate"]
    assert rotated.ended_at is not None
    for backup in runs["backup"]:
        assert backup.ended_at is not None
        assert backup.ended_at <= rotated.started_at or rotated.ended_at <= backup.started_at
    assert rotated.data.get("verdict", "match") == "match", rotated.data
    existing = {p.name for p in (tmp_path / "repo").iterdir()}
    table = page[page.index("id='backups'") :]
    table = table[: table.index("</table>")]
    listed = set(re.findall(r"<td>(\d{8}T\d{6}Z[^<]*)</td>", table))
    assert listed and listed <= existing, (listed, existing)


# -- the rules behind it, without processes -----------------------------------------------------


# The job set is fixed here (every schedule named), never the defaults: a job added to the
# defaults must not change what these tests see. Each run that could end before the next
# decision is held by a gate, so no outcome depends on how fast a thread finishes.
CATCH_UP_SERVE = {
    "backup_cron": "17 3 * * *",
    "verify_after_backup": True,
    "prune_after_backup": True,
    "verify_rotate_cron": "0 4 * * 0",
    "audit_cron": "",
    "chain_check_cron": "",
    "signer_check_cron": "",
    "dkg_watch": True,
}


def test_catch_up_starts_the_backup_first_and_no_verify_beside_it(tmp_path: Path) -> None:
    from tests.test_serve_scheduler import Recorder, at, make

    rec = Recorder()
    gate = rec.gates["backup"] = threading.Event()
    entered = rec.entered["backup"] = threading.Event()
    dkg_gate = rec.gates["dkg-backup"] = threading.Event()
    settings = Settings.model_validate({"serve": CATCH_UP_SERVE})
    specs = job_specs(settings)
    assert [s.name for s in specs] == ["backup", "verify", "verify-rotate", "dkg-backup"]
    sched, _, _ = make(tmp_path, specs, at("2026-03-02T10:00:00"), recorder=rec)
    sched.start()  # never ran: everything scheduled is due now
    assert sched.tick() == ["backup"]
    assert entered.wait(5)
    sched.request("dkg-backup")  # the DKG watch: waits for the backup (one lock)
    assert sched.tick() == []
    gate.set()
    assert sched.wait_idle(5)
    assert sched.tick() == ["dkg-backup", "verify", "verify-rotate"]  # by priority
    dkg_gate.set()
    assert sched.wait_idle(5)
    assert sched.tick() == []
    assert rec.names()[0] == "backup"
    assert sorted(rec.names()[1:]) == ["dkg-backup", "verify", "verify-rotate"]


def test_the_signer_check_shares_the_backup_lock_with_the_dkg_backup(tmp_path: Path) -> None:
    from tests.test_serve_scheduler import Recorder, at, make

    rec = Recorder()
    dkg_gate = rec.gates["dkg-backup"] = threading.Event()
    dkg_entered = rec.entered["dkg-backup"] = threading.Event()
    serve = {**CATCH_UP_SERVE, "backup_cron": "", "verify_rotate_cron": ""}
    settings = Settings.model_validate({"serve": {**serve, "signer_check_cron": "*/5 * * * *"}})
    specs = job_specs(settings)
    assert [s.name for s in specs] == ["signer-check", "dkg-backup"]
    sched, _, _ = make(tmp_path, specs, at("2026-03-02T10:00:00"), recorder=rec)
    sched.start()
    sched.request("dkg-backup")
    assert sched.tick() == ["dkg-backup"]  # priority 0; the signer-check waits (one group)
    assert dkg_entered.wait(5)
    assert sched.tick() == []
    assert sched.skipped["signer-check"] == 2
    dkg_gate.set()
    assert sched.wait_idle(5)
    assert sched.tick() == ["signer-check"]
    assert sched.wait_idle(5)


def test_a_crash_is_recorded_as_one_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_serve_scheduler import at, make

    def vanishing(ctx: JobContext) -> JobResult:
        raise FileNotFoundError(2, "No such file or directory", "/repo/20261201T030000Z")

    sched, _, _ = make(tmp_path, [JobSpec("backup", "17 3 * * *")], at("2026-03-02T10:00:00"))
    sched.action = vanishing
    sched.start()
    sched.tick()
    assert sched.wait_idle(5)
    with StateStore.open(tmp_path / "state") as store:
        (run,) = store.runs("backup")
    assert run.outcome == "error"
    assert run.data["summary"] == (
        "crashed: FileNotFoundError: No such file or directory: /repo/20261201T030000Z"
    )
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)


def test_one_line_reasons() -> None:
    assert one_line_reason(SbtcOpsError("bad\n  thing", hint="do x")) == "bad thing hint: do x"
    assert one_line_reason(ValueError("a\nb")) == "ValueError: a b"
    assert one_line_reason(RuntimeError()) == "RuntimeError: RuntimeError"
    long = one_line_reason(ValueError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")


def test_the_chain_check_remembers_the_key_retention_protects(tmp_path: Path) -> None:
    from sbtc_ops.serve.jobs import chain_check_job

    key = bytes.fromhex("03" + "7e" * 32)
    with FakeStacksNode() as node:
        node.set_aggregate_key(key)
        settings = Settings.model_validate(
            {"state_dir": tmp_path / "state", "stacks": {"endpoints": [node.url], "retries": 0}}
        )
        assert chain_check_job(settings).outcome == "ok"
        assert chain_check_job(settings).outcome == "ok"
    with StateStore.open(tmp_path / "state") as store:
        assert [e.subject for e in store.events("chain-key")] == [key.hex()]
