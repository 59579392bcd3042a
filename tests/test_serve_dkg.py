"""The DKG watch inside `serve`, against a real PostgreSQL: a new dkg_shares row and a status
change each produce a --dkg-only backup holding it within two poll intervals; the
unprotected-time metric drops to 0; killing the database is reported and the watch recovers
when it comes back."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbtc_ops.state import Run, StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.pg import SourceServer, new_signer_database, start_source_server
from tests.support.serve import (
    NO_JOBS,
    Daemon,
    running_daemon,
    signer_config,
    wait_until,
    write_config,
)
from tests.support.verify import private_tmpdir, serve_facts

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def own_server() -> Iterator[SourceServer]:
    """A source server of this module alone: the test kills and restarts it."""
    server = start_source_server()
    try:
        yield server
    finally:
        server.cluster.stop()


def metric(daemon: Daemon, name: str) -> float | None:
    text = daemon.get("/metrics")[1]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def dkg_runs(daemon: Daemon) -> list[Run]:
    return [r for r in daemon.runs("dkg-backup") if r.outcome != "running"]


def full_backups(daemon: Daemon) -> int:
    return sum(r.outcome == "ok" for r in daemon.runs("backup"))


def insert_round(server: SourceServer, dbname: str, status: str = "unverified") -> str:
    """A new DKG round: a copy of the newest row under a new key, created now."""
    key = "02" + secrets.token_hex(32)
    with server.connect(dbname) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'sbtc_signer' AND table_name = 'dkg_shares' "
                "ORDER BY ordinal_position"
            )
        ]
        replaced = {
            "aggregate_key": "decode(%(key)s, 'hex')",
            "created_at": "now()",
            "dkg_shares_status": "%(status)s::sbtc_signer.dkg_shares_status",
        }
        select = ", ".join(replaced.get(c, c) for c in columns)
        conn.execute(
            f"INSERT INTO sbtc_signer.dkg_shares ({', '.join(columns)}) "
            f"SELECT {select} FROM sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT 1",
            {"key": key, "status": status},
        )
    return key


def wait_for_dkg_backup(daemon: Daemon, seen: int, timeout_s: float = 60) -> Run:
    runs = wait_until(lambda: len(dkg_runs(daemon)) > seen and dkg_runs(daemon), timeout_s,
                      daemon.describe)  # fmt: skip
    return max(runs, key=lambda r: r.id)


def test_new_rounds_and_status_changes_are_backed_up_within_two_intervals(
    tmp_path: Path, own_server: SourceServer
) -> None:
    url, facts = new_signer_database(own_server, target_mb=1.0, seed=91, dbname="dkgwatch")
    state = tmp_path / "state"
    # A full backup "ran" a minute ago: no catch-up backup at start-up.
    with StateStore.open(state) as store:
        run = store.start_run("backup", at=time.time() - 60)
        store.finish_run(run, "ok", {"summary": "earlier"}, at=time.time() - 50)
    run_tmp = private_tmpdir("sdk-")
    try:
        with FakeStacksNode(deployer=facts.deployer) as node:
            serve_facts(node, facts)
            config = signer_config(
                tmp_path,
                url,
                node.url,
                backup_cron="17 3 * * *",
                verify_after_backup=False,
                dkg_watch=True,
                dkg_poll_interval_s=INTERVAL_S,
            )
            with running_daemon(config, state, {"TMPDIR": str(run_tmp)}) as daemon:
                _run_scenario(daemon, own_server, node, tmp_path)
                assert daemon.terminate() == 0
    finally:
        shutil.rmtree(run_tmp, ignore_errors=True)


def _run_scenario(
    daemon: Daemon, server: SourceServer, node: FakeStacksNode, tmp_path: Path
) -> None:
    # 1. The newest shares are in no backup yet: the first poll protects them.
    first = wait_for_dkg_backup(daemon, 0)
    assert first.outcome == "ok", first.data
    wait_until(lambda: metric(daemon, "sbtc_ops_dkg_unprotected_seconds") == 0, 30)
    assert metric(daemon, "sbtc_ops_dkg_watch_up") == 1
    # The full backup it scheduled follows (and its verify after it).
    wait_until(
        lambda: full_backups(daemon) >= 2,
        60,
        lambda: repr([(r.job, r.outcome, r.data.get("summary")) for r in daemon.runs()]),
    )

    # 2. A new round appears.
    seen = len(dkg_runs(daemon))
    inserted_at = time.time()
    key = insert_round(server, "dkgwatch")
    run = wait_for_dkg_backup(daemon, seen)
    assert run.outcome == "ok", run.data
    assert run.data["newest_dkg_key"] == key
    assert run.started_at - inserted_at <= 2 * INTERVAL_S
    backup_dir = tmp_path / "repo" / run.data["backup"]
    assert backup_dir.is_dir()
    wait_until(lambda: metric(daemon, "sbtc_ops_dkg_unprotected_seconds") == 0, 30)
    # Let the full backup it scheduled finish first (it would hold the next change too).
    wait_until(lambda: full_backups(daemon) >= 3, 60)

    # 3. The round becomes verified: another dkg-only backup, with it as the verified key.
    seen = len(dkg_runs(daemon))
    changed_at = time.time()
    with server.connect("dkgwatch") as conn:
        conn.execute(
            "UPDATE sbtc_signer.dkg_shares SET dkg_shares_status = 'verified' "
            "WHERE aggregate_key = decode(%s, 'hex')",
            (key,),
        )
    run = wait_for_dkg_backup(daemon, seen)
    assert run.outcome == "ok", run.data
    assert run.started_at - changed_at <= 2 * INTERVAL_S
    with StateStore.open(daemon.state_dir) as store:
        event = store.last_event("backup", run.data["backup"])
    assert event is not None and event.data["kind"] == "dkg-only"
    assert event.data["newest_verified_aggregate_key"] == key
    wait_until(lambda: metric(daemon, "sbtc_ops_dkg_unprotected_seconds") == 0, 30)
    _verify_dkg_backup(daemon, node, tmp_path, run.data["backup"], key)

    # 4. The database is killed: reported, then the watch recovers when it returns.
    cluster = server.cluster
    cluster._kill_server()  # a real SIGKILL of the postmaster and its backends
    wait_until(lambda: "cannot read the signer database" in "".join(daemon.stderr), 30)
    wait_until(lambda: metric(daemon, "sbtc_ops_dkg_watch_up") == 0, 10)
    assert daemon.get("/healthz")[0] == 200  # the daemon itself is fine
    cluster._start_server()  # same data directory: crash recovery, same port
    wait_until(lambda: "answers again" in "".join(daemon.stderr), 30, daemon.describe)
    wait_until(lambda: metric(daemon, "sbtc_ops_dkg_watch_up") == 1, 30)
    seen = len(dkg_runs(daemon))
    key2 = insert_round(server, "dkgwatch")
    run = wait_for_dkg_backup(daemon, seen)
    assert run.outcome == "ok" and run.data["newest_dkg_key"] == key2


def _verify_dkg_backup(
    daemon: Daemon, node: FakeStacksNode, tmp_path: Path, backup_id: str, key: str
) -> None:
    """The dkg-only backup verifies against a call-read server serving its key."""
    from tests.support.cli import run_cli

    node.set_aggregate_key(bytes.fromhex(key))
    result = run_cli(
        "--config", str(daemon.config), "verify", backup_id, "--stacks-url", node.url, "--json",
        cwd=tmp_path, env=daemon.env, timeout=120,
    )  # fmt: skip
    doc: dict[str, Any] = result.json()
    assert doc["verdict"] == "match", result.stdout[-3000:] + result.stderr[-2000:]
    assert doc["db_aggregate_key"] == key


def test_watch_off_without_a_database_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sbtc-ops.toml", {"serve": {**NO_JOBS, "dkg_watch": True}})
    with running_daemon(config, tmp_path / "state") as daemon:
        assert "DKG watch off: no signer database configured" in "".join(daemon.stderr)
        assert metric(daemon, "sbtc_ops_dkg_watch_up") is None
        assert daemon.terminate() == 0
