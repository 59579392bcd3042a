"""`history`: CLI backup and verify runs are listed beside the daemon's job runs; unknown job names are
refused; `serve --once chain-check` says why an endpoint is down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.history import CliRun, history_rows, record_cli_run
from sbtc_ops.state import StateStore
from tests.support.cli import CliResult
from tests.support.serve import NO_JOBS, write_config

KEY_HEX = "02" + "ab" * 32
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: connection refused
DEAD_DB = "postgresql://signer@127.0.0.1:9"


def test_unknown_job_is_a_usage_error_naming_the_jobs(cli: Callable[..., CliResult]) -> None:
    result = cli("history", "--job", "nosuch")
    assert result.code == 2
    assert "'nosuch' is not a job" in result.stderr
    for job in ("backup", "verify", "verify-rotate", "audit", "chain-check", "dkg-backup"):
        assert job in result.stderr
    assert "Traceback" not in result.stderr
    as_json = cli("history", "--job", "nosuch", "--json")
    assert as_json.code == 2 and as_json.json()["ok"] is False


def test_a_cli_verify_run_is_in_history(cli: Callable[..., CliResult], workdir: Path) -> None:
    (workdir / "garbage.dump").write_bytes(b"not a dump at all\n" * 100)
    verify = cli("verify", "garbage.dump", "--expected-key", KEY_HEX, "--json")
    assert verify.code == 1, verify.stderr
    runs = cli("history", "--json").json()["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert (run["job"], run["origin"], run["outcome"]) == ("verify", "cli", "problem")
    assert (
        run["summary"].startswith("garbage.dump: corrupt") and "restore.complete" in run["summary"]
    )
    assert run["duration_s"] is not None and run["duration_s"] >= 0
    assert cli("history", "--job", "verify", "--json").json()["runs"] == runs
    assert cli("history", "--job", "backup", "--json").json()["runs"] == []
    table = cli("history")
    assert "verify (cli)" in table.stdout


@pytest.mark.postgres
def test_cli_backups_are_in_history(
    cli: Callable[..., CliResult], workdir: Path, signer_db: tuple[str, Any]
) -> None:
    empty = cli("history")
    assert empty.code == 0 and "`backup` and `verify` commands" in empty.stderr
    url, _ = signer_db
    taken = cli("backup", "--db", url, "--to", str(workdir / "repo"), "--json")
    assert taken.code == 0, taken.stderr
    backup_id = taken.json()["backup"]["id"]
    failed = cli("backup", "--db", f"{DEAD_DB}/signer", "--to", str(workdir / "repo"))
    assert failed.code == 2
    runs = cli("history", "--job", "backup", "--json").json()["runs"]
    assert [(r["job"], r["origin"], r["outcome"]) for r in runs] == [
        ("backup", "cli", "error"),
        ("backup", "cli", "ok"),
    ]
    assert runs[1]["summary"].startswith(f"{backup_id}: full, ")
    assert runs[1]["data"]["backup"] == backup_id and runs[1]["data"]["kind"] == "full"
    assert "backup (cli)" in cli("history", "--job", "backup").stdout


def test_cli_runs_and_job_runs_merge_newest_first(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        run_id = store.start_run("verify", at=1000.0)
        store.finish_run(run_id, "ok", {"summary": "daemon run"}, at=1010.0)
    record_cli_run(tmp_path, CliRun("verify", 2000.0, 2005.0, "problem", "cli run"))
    record_cli_run(tmp_path, CliRun("verify", 500.0, 501.0, "ok", "older cli run"))
    with StateStore.open(tmp_path) as store:
        rows = history_rows(store, None, limit=10)
        limited = history_rows(store, "verify", limit=2)
    assert [(r["summary"], r["origin"]) for r in rows] == [
        ("cli run", "cli"),
        ("daemon run", "serve"),
        ("older cli run", "cli"),
    ]
    assert [r["summary"] for r in limited] == ["cli run", "daemon run"]
    assert rows[0]["duration_s"] == 5.0


def test_chain_check_failure_says_why(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    config = write_config(
        tmp_path / "sbtc-ops.toml",
        {
            "stacks": {"endpoints": [DEAD_ENDPOINT], "timeout_s": 2, "retries": 0,
                       "connect_timeout_s": 1},
            "serve": {**NO_JOBS, "chain_check_cron": "*/10 * * * *"},
        },
    )  # fmt: skip
    result = cli("--config", str(config), "serve", "--once", "chain-check")
    assert result.code != 0
    line = next(x for x in result.stderr.splitlines() if x.startswith("chain-check:"))
    assert "0/1 endpoints up; http://127.0.0.1:9: " in line
    reason = line.split("http://127.0.0.1:9: ", 1)[1]
    assert reason.strip() and reason.strip() != "no answer"
