"""A real `sbtc-ops serve` process: jobs in child processes, HTTP endpoints, graceful
SIGTERM, kill -9 during a job, `serve --once`, and a real backup + verify against a real
PostgreSQL to a local directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbtc_ops.pg import postgres_processes
from tests.fakes.stacks_node import FakeStacksNode, slow
from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.pg import (
    SourceServer,
    assert_no_postgres_left,
    new_signer_database,
)
from tests.support.serve import (
    NO_JOBS,
    Daemon,
    WebhookSink,
    alive,
    children,
    running_daemon,
    signer_config,
    wait_until,
    write_config,
)
from tests.support.verify import private_tmpdir, serve_facts

pytestmark = pytest.mark.timeout(180)

KEY = bytes.fromhex("03" + "5d" * 32)
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: connection refused


@pytest.fixture
def node() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as fake:
        fake.set_aggregate_key(KEY)
        yield fake


def chain_config(
    tmp_path: Path, endpoints: list[str], timeout_s: float = 3.0, webhooks: tuple[str, ...] = ()
) -> Path:
    return write_config(
        tmp_path / "sbtc-ops.toml",
        {
            "stacks": {"endpoints": endpoints, "timeout_s": timeout_s, "retries": 0,
                       "connect_timeout_s": 1},
            "serve": {**NO_JOBS, "chain_check_cron": "*/10 * * * *", "webhooks": list(webhooks)},
        },
    )  # fmt: skip


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_serve_runs_the_chain_check_and_serves_metrics_health_and_status(
    tmp_path: Path, node: FakeStacksNode
) -> None:
    with WebhookSink([]) as sink:
        config = chain_config(tmp_path, [node.url, DEAD_ENDPOINT], webhooks=(sink.url("/t0k"),))
        _chain_check_scenario(config, tmp_path, node, sink)


def _chain_check_scenario(
    config: Path, tmp_path: Path, node: FakeStacksNode, sink: WebhookSink
) -> None:
    with running_daemon(config, tmp_path / "state") as daemon:
        # Never ran here: the check runs at start-up.
        run = wait_until(
            lambda: next((r for r in daemon.runs("chain-check") if r.outcome != "running"), None),
            30,
            daemon.describe,
        )
        assert run.outcome == "problem"
        assert run.data["onchain_aggregate_key"] == KEY.hex()
        status, body, headers = daemon.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
        found = samples(body)
        up = "sbtc_ops_chain_endpoint_up"
        assert found[(up, (("endpoint", node.url),))] == 1
        assert found[(up, (("endpoint", DEAD_ENDPOINT),))] == 0
        runs_key = ("sbtc_ops_job_runs_total", (("outcome", "problem"), ("task", "chain-check")))
        assert found[runs_key] == 1
        # The next slot is on the ten-minute grid.
        next_run = found[("sbtc_ops_job_next_run_timestamp_seconds", (("task", "chain-check"),))]
        assert next_run > run.started_at and next_run % 600 == 0
        # A scrape never runs a job.
        for _ in range(5):
            daemon.get("/metrics")
        assert len(daemon.runs("chain-check")) == 1
        assert daemon.get("/healthz")[:2] == (200, "ok\n")
        assert daemon.get("/readyz")[:2] == (200, "ready\n")
        status, page, headers = daemon.get("/")
        assert status == 200 and "Chain endpoints: ATTENTION" in page
        schedule = page[page.index("<table id='schedule'>") :]
        assert "<td>chain-check</td><td>problem</td>" in schedule
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert daemon.get("/nope")[0] == 404
        # The failing check was announced once on the webhook, without its URL in the logs.
        path, body = wait_until(lambda: sink.bodies, 15)[0]
        assert path == "/t0k"
        assert (body["event"], body["job"], body["outcome"]) == (
            "failure",
            "chain-check",
            "problem",
        )
        code = daemon.terminate()
        assert code == 0, daemon.describe()
        assert "sbtc-ops serve: stopped" in "".join(daemon.stderr)
        assert "/t0k" not in "".join(daemon.stderr)
        # Every finished run is one line on stderr: job, outcome, duration and why.
        (line,) = [x for x in daemon.stderr if x.startswith("job chain-check: ")]
        assert re.fullmatch(r"job chain-check: problem in \d+\.\d s: .*1/2 endpoints.*\n", line)


def hung_chain_check(tmp_path: Path, node: FakeStacksNode) -> tuple[Path, int]:
    node.fail(slow(60), on="get-current-aggregate-pubkey")
    return chain_config(tmp_path, [node.url], timeout_s=90), 0


def wait_for_running_job(daemon: Daemon) -> int:
    """The worker process of a chain check that is in progress."""
    wait_until(
        lambda: any(r.outcome == "running" for r in daemon.runs("chain-check")),
        30,
        daemon.describe,
    )
    workers = wait_until(lambda: children(daemon.pid), 10, daemon.describe)
    assert len(workers) == 1
    return int(workers[0])


def test_sigterm_stops_a_running_job_and_records_it_interrupted(
    tmp_path: Path, node: FakeStacksNode
) -> None:
    config, _ = hung_chain_check(tmp_path, node)
    json_log = ("--log-format", "json")
    with running_daemon(config, tmp_path / "state", args=json_log) as daemon:
        worker = wait_for_running_job(daemon)
        assert daemon.terminate(timeout_s=30) == 0, daemon.describe()
        assert not alive(worker)
        (run,) = daemon.runs("chain-check")
        assert run.outcome == "interrupted" and run.ended_at is not None
        assert run.data["summary"] == "stopped by shutdown"
    # --log-format json: every stderr line is one JSON document, the run's outcome among them.
    lines = [json.loads(line) for line in daemon.stderr]
    (job,) = [x for x in lines if x["event"] == "job"]
    assert (job["job"], job["outcome"], job["summary"]) == (
        "chain-check",
        "interrupted",
        "stopped by shutdown",
    )
    assert isinstance(job["duration_s"], float) and job["ts"].endswith("+00:00")
    assert any(x["event"] == "message" and "serve: stopped" in x["message"] for x in lines)


def test_kill_9_during_a_job_leaves_an_intact_db_and_an_interrupted_run(
    tmp_path: Path, node: FakeStacksNode
) -> None:
    config, _ = hung_chain_check(tmp_path, node)
    state = tmp_path / "state"
    daemon = Daemon(config, state).start()
    try:
        worker = wait_for_running_job(daemon)
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.proc.wait(10)  # type: ignore[union-attr]
        # The job process is told (parent-death signal) and goes too, without waiting out
        # its network read.
        wait_until(lambda: not alive(worker), 15, lambda: f"worker {worker} still alive")
    finally:
        daemon.kill()
    with sqlite3.connect(state / "state.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT outcome FROM runs").fetchall() == [("running",)]
    node.clear_failures()
    with running_daemon(config, state) as again:
        assert "recorded 1 run(s) left unfinished" in "".join(again.stderr)
        first = min(again.runs("chain-check"), key=lambda r: r.id)
        assert first.outcome == "interrupted"
        assert first.ended_at is not None
        body = again.get("/metrics")[1]
        interrupted = (
            "sbtc_ops_job_runs_total",
            (("outcome", "interrupted"), ("task", "chain-check")),
        )
        assert samples(body)[interrupted] == 1
        assert again.terminate() == 0


def test_serve_once_for_timers_writes_the_textfile(tmp_path: Path, node: FakeStacksNode) -> None:
    config = chain_config(tmp_path, [node.url])
    textfile = tmp_path / "sbtc-ops.prom"
    env = clean_env(tmp_path / "state")
    result = run_cli(
        "--config", str(config), "--metrics-textfile", str(textfile), "serve", "--once",
        "chain-check", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "chain-check: ok 1/1 endpoints up" in result.stderr
    found = samples(textfile.read_text())
    assert found[("sbtc_ops_chain_endpoint_up", (("endpoint", node.url),))] == 1
    unknown = run_cli("--config", str(config), "serve", "--once", "backup", cwd=tmp_path, env=env)
    assert unknown.code == 2
    assert "unknown or disabled job backup" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_bad_bind_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sbtc-ops.toml", {"serve": NO_JOBS})
    env = clean_env(tmp_path / "state")
    result: CliResult = run_cli(
        "--config", str(config), "serve", "--bind", "localhost", cwd=tmp_path, env=env
    )
    assert result.code == 2 and "is not HOST:PORT" in result.stderr


@dataclass
class LiveSigner:
    config: Path
    url: str
    node: FakeStacksNode
    run_tmp: Path  # TMPDIR of the daemon and its jobs: throwaway clusters live here


@contextmanager
def live_signer(
    tmp_path: Path, server: SourceServer, seed: int, **serve: Any
) -> Iterator[LiveSigner]:
    """A generated signer database, a call-read server serving its key, and a config for
    them; afterwards no throwaway-cluster postgres may be left in the run's TMPDIR."""
    url, facts = new_signer_database(server, target_mb=1.0, seed=seed)
    run_tmp = private_tmpdir("ssv-")
    try:
        with FakeStacksNode(deployer=facts.deployer) as node:
            serve_facts(node, facts)
            config = signer_config(tmp_path, url, node.url, backup_cron="17 3 * * *", **serve)
            yield LiveSigner(config, url, node, run_tmp)
        assert_no_postgres_left(under=run_tmp)
    finally:
        shutil.rmtree(run_tmp, ignore_errors=True)


@pytest.mark.postgres
def test_serve_takes_a_real_backup_then_verifies_it(
    tmp_path: Path,
    source_server: SourceServer,
) -> None:
    with (
        live_signer(tmp_path, source_server, seed=71) as signer,
        running_daemon(
            signer.config, tmp_path / "state", {"TMPDIR": str(signer.run_tmp)}
        ) as daemon,
    ):
        verify = wait_until(
            lambda: next((r for r in daemon.runs("verify") if r.outcome != "running"), None),
            150,
            daemon.describe,
        )
        (backup,) = daemon.runs("backup")
        assert backup.outcome == "ok", backup.data
        assert verify.outcome == "ok", verify.data
        assert verify.data["verdict"] == "match"
        assert verify.data["backup"] == backup.data["backup"]
        assert (tmp_path / "repo" / backup.data["backup"]).is_dir()
        found = samples(daemon.get("/metrics")[1])
        assert found[("sbtc_ops_last_backup_size_bytes", (("kind", "full"),))] > 0
        assert found[("sbtc_ops_aggregate_key_match", ())] == 1
        assert found[("sbtc_ops_last_verify_verdict", (("verdict", "match"),))] == 1
        assert signer.url.split(":")[2].split("@")[0] not in "".join(daemon.stderr)
        assert daemon.terminate() == 0


@pytest.mark.postgres
def test_sigterm_during_a_verify_removes_its_throwaway_cluster(
    tmp_path: Path,
    source_server: SourceServer,
) -> None:
    with live_signer(tmp_path, source_server, seed=72) as signer:
        # The chain read hangs, so the verify waits with its cluster up.
        signer.node.fail(slow(10), on="get-current-aggregate-pubkey")
        env = {"TMPDIR": str(signer.run_tmp)}
        with running_daemon(signer.config, tmp_path / "state", env) as daemon:
            wait_until(
                lambda: (
                    any(r.outcome == "running" for r in daemon.runs("verify"))
                    and postgres_processes(under=signer.run_tmp)
                ),
                90,
                daemon.describe,
            )
            assert daemon.terminate(timeout_s=60) == 0, daemon.describe()
            (verify,) = daemon.runs("verify")
            assert verify.outcome == "interrupted"
        assert_no_postgres_left(under=signer.run_tmp)
        assert not list(signer.run_tmp.glob("sbtc-pg-*")), "the cluster directory was left"


@pytest.mark.postgres
def test_serve_once_backup_is_followed_by_its_verify(
    tmp_path: Path,
    source_server: SourceServer,
) -> None:
    key = tmp_path / "attest_ed25519"  # unattended serve signs its drills with its own key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with live_signer(tmp_path, source_server, seed=73) as signer:
        env = clean_env(
            tmp_path / "state",
            {"TMPDIR": str(signer.run_tmp), "SBTC_OPS_ATTEST__SIGNING_KEY": str(key)},
        )
        config = str(signer.config)
        once = run_cli("--config", config, "serve", "--once", "backup", cwd=tmp_path, env=env,
                       timeout=120)  # fmt: skip
        assert once.code == 0, once.stderr
        reported = [
            line for line in once.stderr.splitlines() if line.startswith(("backup:", "verify:"))
        ]
        assert [line.split(":")[0] for line in reported] == ["backup", "verify"]
        assert reported[1].endswith(": match")
        history = run_cli("--config", config, "history", "--json", cwd=tmp_path, env=env)
        runs = [(r["job"], r["outcome"]) for r in history.json()["runs"]]
        assert runs == [("verify", "ok"), ("backup", "ok")]
        # The unattended drill left a signed attestation beside the backup.
        (backup_dir,) = [p for p in (tmp_path / "repo").iterdir() if p.is_dir()]
        (statement,) = (backup_dir / "attestations").glob("*.intoto.json")
        allowed = tmp_path / "allowed_signers"
        public = Path(f"{key}.pub").read_text().split()
        allowed.write_text(f"serve {public[0]} {public[1]}\n")
        done = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "serve", "-n",
             "sbtc-ops-drill-attestation@v1", "-s", f"{statement}.sig"],
            input=statement.read_bytes(), capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
