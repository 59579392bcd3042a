"""serve's signer-check job, run as `serve --once signer-check` (a real child process): the
image-change trigger takes and records a backup; the metrics export DKG state, database size
and event lag from a real signer database, a bitcoind stand-in and the signer's /info."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest

from sbtc_ops.serve.metrics import registry_for
from sbtc_ops.signer.knowledge import load
from sbtc_ops.state import EventKind, StateStore
from tests.fakes.bitcoind import FakeBitcoind
from tests.fakes.signer_info import FakeSignerInfo
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import CliResult
from tests.support.pg import SourceServer, new_signer_database
from tests.support.serve import NO_JOBS, write_config
from tests.support.verify import serve_facts

pytestmark = pytest.mark.postgres

IMAGE = "ghcr.io/stacks-sbtc/sbtc:signer-v{}"


def write_compose(path: Path, version: str) -> None:
    path.write_text(f"services:\n  sbtc-signer:\n    image: {IMAGE.format(version)}\n")


def setup(
    workdir: Path, url: str, bitcoind: FakeBitcoind, info: FakeSignerInfo, node: FakeStacksNode
) -> tuple[Path, Path]:
    compose = workdir / "docker-compose.yml"
    write_compose(compose, "1.2.0")
    data_dir = workdir / "pgdata"
    data_dir.mkdir()
    serve: dict[str, Any] = {**NO_JOBS, "signer_check_cron": "*/5 * * * *"}
    config = write_config(
        workdir / "sbtc-ops.toml",
        {
            "db": {"url": url},
            "backup": {"local_dir": str(workdir / "repo")},
            "stacks": {"endpoints": [node.url], "retries": 0},
            "serve": serve,
            "audit": {
                "compose_files": [str(compose)],
                "signer_info_url": f"{info.url}/info",
                "bitcoin_rpc_url": bitcoind.rpc_url(),
                "db_data_path": str(data_dir),
            },
        },
    )
    return config, compose


def run_check(cli: Callable[..., CliResult], config: Path) -> CliResult:
    result = cli("--config", str(config), "serve", "--once", "signer-check", timeout=240)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def image_events(state_dir: Path) -> list[dict[str, Any]]:
    with StateStore.open(state_dir) as store:
        return [e.data for e in reversed(store.events(EventKind.SIGNER_IMAGE, limit=20))]


def last_check(state_dir: Path) -> dict[str, Any]:
    with StateStore.open(state_dir) as store:
        run = store.last_run("signer-check")
    assert run is not None
    return dict(run.data)


def test_an_image_change_takes_and_records_a_backup_and_metrics_follow(
    cli: Callable[..., CliResult], workdir: Path, source_server: SourceServer
) -> None:
    url, facts = new_signer_database(source_server, target_mb=0.5, seed=41)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT started_at_bitcoin_block_height, dkg_shares_status::text "
            "FROM sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[1] == "unverified"  # the generator's newest round
    state = workdir / "state"
    with FakeBitcoind() as bitcoind, FakeSignerInfo() as info, FakeStacksNode() as node:
        serve_facts(node, facts)
        bitcoind.blockchain["blocks"] = int(row[0]) + 4
        info.info["build_info"]["git_revision"] = load().release("1.2.0").commit
        info.set_tips("stacks", 1000, 1012)
        config, compose = setup(workdir, url, bitcoind, info, node)

        first = run_check(cli, config)
        data = last_check(state)
        assert first.code == 0, data["errors"]
        assert data["errors"] == {}
        assert (data["dkg_newest_status"], data["dkg_unverified_blocks"]) == ("unverified", 4)
        assert data["stacks_event_lag_blocks"] == 12
        assert data["dkg_registry_key_state"] == "match"
        assert data["image_changed"] is False
        (baseline,) = image_events(state)
        assert baseline["first_seen"] and baseline["image"] == IMAGE.format("1.2.0")

        backup = cli("--config", str(config), "backup", "--json")
        assert backup.code == 0, backup.stderr
        before_id = backup.json()["backup"]["id"]

        # The operator moves the signer to v1.3.3: new image, new build revision.
        write_compose(compose, "1.3.3")
        info.info["build_info"]["git_revision"] = load().release("1.3.3").commit
        second = run_check(cli, config)
        assert second.code == 0, second.stderr

    change = image_events(state)[-1]
    assert change["previous_image"] == IMAGE.format("1.2.0")
    assert change["image"] == IMAGE.format("1.3.3")
    assert change["backup_before"] == before_id
    after_id = change["backup_after"]
    assert after_id != before_id and (workdir / "repo" / after_id).is_dir()
    assert last_check(state)["image_changed"] is True

    text = generate_latest(registry_for(state)).decode()
    assert 'sbtc_ops_dkg_newest_status{status="unverified"} 1.0' in text
    assert "sbtc_ops_dkg_unverified_blocks 4.0" in text
    assert 'sbtc_ops_dkg_registry_key_state{state="match"} 1.0' in text
    assert "sbtc_ops_stacks_event_lag_blocks 12.0" in text
    assert "sbtc_ops_db_size_bytes " in text
    assert "sbtc_ops_db_volume_free_bytes{" in text
    assert source_server.signer_password not in text


def test_an_unreachable_database_is_named_and_the_other_parts_still_report(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    with FakeBitcoind() as bitcoind, FakeSignerInfo() as info, FakeStacksNode() as node:
        info.set_tips("stacks", 500, 501)
        down = "postgresql://signer:pw-x1y2z3@127.0.0.1:1/signer"
        config, _ = setup(workdir, down, bitcoind, info, node)
        result = run_check(cli, config)
    assert result.code == 1, result.stderr
    data = last_check(workdir / "state")
    assert set(data["errors"]) == {"dkg", "database"}
    assert "pw-x1y2z3" not in str(data["errors"])
    assert data["stacks_event_lag_blocks"] == 1
