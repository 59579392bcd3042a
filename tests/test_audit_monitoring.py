"""audit monitoring: a Prometheus endpoint whose counters advance, the signer's GET /info, backups."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.http_base import http_error, not_json, slow
from tests.fakes.prom_endpoint import FakeMetrics
from tests.fakes.signer_info import AGGREGATE_KEY, FakeSignerInfo
from tests.support.audit2 import make_settings, run_area, statuses, store_backup, write

MON_IDS = [f"MON-00{i}" for i in range(1, 10)]
OTHER_KEY = "03" + "7e" * 32


@pytest.fixture
def metrics() -> Iterator[FakeMetrics]:
    with FakeMetrics() as fake:
        yield fake


@pytest.fixture
def info() -> Iterator[FakeSignerInfo]:
    with FakeSignerInfo() as fake:
        yield fake


def settings_for(
    tmp_path: Path, metrics: FakeMetrics | None, info: FakeSignerInfo | None, **extra: Any
) -> Any:
    signer: dict[str, Any] = {}
    audit: dict[str, Any] = dict(extra.pop("audit", {}))
    if metrics is not None:
        signer["prometheus_exporter_endpoint"] = f"127.0.0.1:{metrics.port}"
    if info is not None:
        signer["event_observer_bind"] = f"0.0.0.0:{info.port}"
    return make_settings(tmp_path, signer=signer, audit=audit, **extra)


def with_backups(tmp_path: Path, *backups: tuple[str, str | None, bool]) -> dict[str, Any]:
    directory = tmp_path / "backups"
    directory.mkdir(exist_ok=True)
    for backup_id, key, complete in backups:
        store_backup(directory, backup_id, key, complete)
    return {"local_dir": str(directory)}


def test_healthy_signer_passes_every_monitoring_check(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    backup = with_backups(tmp_path, ("20261123T000000Z", AGGREGATE_KEY, True))
    findings = run_area(
        "monitoring", settings_for(tmp_path, metrics, info, backup=backup), root=tmp_path
    )
    assert statuses(findings) == dict.fromkeys(MON_IDS, "pass")
    assert findings["MON-005"].data["deltas"] == {"bitcoin": 1.0, "stacks": 3.0}
    scrapes = [r for r in metrics.requests if r.path == "/metrics"]
    assert len(scrapes) == 2
    assert scrapes[1].received_at - scrapes[0].received_at >= 0.2
    assert [r.path for r in info.requests] == ["/info"]  # shared by every /info check


def test_frozen_counters_no_peers_and_restart(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    metrics.frozen = True
    metrics.peers = 0
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-004"] == "fail"
    assert statuses(findings)["MON-005"] == "warn"
    assert "no block observed within 0.2s" in findings["MON-005"].detail

    metrics.frozen = False
    metrics.advance = {"bitcoin": -500, "stacks": -100}
    metrics.peers = 3  # bootstrap_signatures_required 11 → 10 peers needed
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-005"] == "warn"
    assert "restarted" in findings["MON-005"].detail
    assert statuses(findings)["MON-004"] == "warn"


def test_the_next_audit_compares_with_the_previous_scrape(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    settings = settings_for(tmp_path, metrics, info)
    run_area("monitoring", settings, root=tmp_path)
    assert metrics.paths().count("/metrics") == 2
    state = tmp_path / "state" / "audit-metrics-scrape.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    # Age the saved scrape past audit.metrics_interval_s (no sleeping): it is then usable.
    saved = json.loads(state.read_text())
    saved["at"] -= 60
    state.write_text(json.dumps(saved))
    findings = run_area("monitoring", settings, root=tmp_path)
    assert metrics.paths().count("/metrics") == 3  # one scrape, no waiting
    assert statuses(findings)["MON-005"] == "pass"
    assert "since the previous audit" in findings["MON-005"].detail


def test_no_bitcoin_block_for_hours_fails(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    metrics.advance = {"bitcoin": 0, "stacks": 3}
    saved = {
        "url": f"{metrics.url}/metrics",
        "at": time.time() - 4 * 3600,
        "blocks": {"bitcoin": metrics.observed["bitcoin"], "stacks": 10},
    }
    write(tmp_path, "/state/audit-metrics-scrape.json", json.dumps(saved))
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-005"] == "fail"
    assert "no Bitcoin block observed since the previous audit 4.0 h ago" in (
        findings["MON-005"].detail
    )


def test_not_prometheus_or_not_the_signer(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    metrics.fail(not_json())
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-002"] == "fail"
    assert "not in the Prometheus text format" in findings["MON-002"].detail
    assert [statuses(findings)[i] for i in ("MON-003", "MON-004", "MON-005")] == ["skip"] * 3

    metrics.clear_failures()
    metrics.app = "stacks-node"
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-002"] == "pass"
    assert statuses(findings)["MON-003"] == "fail"


def test_endpoint_errors_timeouts_and_offline(tmp_path: Path, info: FakeSignerInfo) -> None:
    with FakeMetrics() as metrics:
        metrics.fail(http_error(500, "oops"))
        findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
        assert statuses(findings)["MON-002"] == "error"
        assert "HTTP 500" in findings["MON-002"].detail
        metrics.clear_failures()
        metrics.fail(slow(3))
        settings = settings_for(tmp_path, metrics, info, audit={"network_timeout_s": 0.3})
        findings = run_area("monitoring", settings, root=tmp_path)
        assert statuses(findings)["MON-002"] == "fail"
        assert "did not answer within 0.3s" in findings["MON-002"].detail
        settings = settings_for(tmp_path, metrics, info)
    assert not metrics.running
    findings = run_area("monitoring", settings, root=tmp_path)
    assert statuses(findings)["MON-002"] == "fail"
    assert "unreachable" in findings["MON-002"].detail


def test_signer_behind_and_key_mismatches(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    info.set_tips("bitcoin", 871200, 871210)
    info.set_tips("stacks", None, 1234567)
    info.set_keys(OTHER_KEY, AGGREGATE_KEY)
    backup = with_backups(tmp_path, ("20261123T000000Z", AGGREGATE_KEY, True))
    findings = run_area(
        "monitoring", settings_for(tmp_path, metrics, info, backup=backup), root=tmp_path
    )
    assert statuses(findings)["MON-007"] == "fail"
    assert "bitcoin: signer at 871200, node at 871210" in findings["MON-007"].detail
    assert "stacks: the signer's tip is unknown" in findings["MON-007"].detail
    assert statuses(findings)["MON-008"] == "fail"
    assert statuses(findings)["MON-009"] == "fail"
    assert "back up urgently" in findings["MON-009"].detail


def test_tips_within_tolerance_pass(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    info.set_tips("bitcoin", 871208, 871210)
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-007"] == "pass"
    info.set_tips("bitcoin", 871207, 871210)
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-007"] == "fail"


def test_newest_complete_backup_is_the_one_compared(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    backup = with_backups(
        tmp_path,
        ("20261120T000000Z", OTHER_KEY, True),
        ("20261122T000000Z", AGGREGATE_KEY.upper(), True),
        ("20261124T000000Z", None, False),  # in progress: not a backup yet
    )
    findings = run_area(
        "monitoring", settings_for(tmp_path, metrics, info, backup=backup), root=tmp_path
    )
    assert statuses(findings)["MON-009"] == "pass"
    assert findings["MON-009"].data["backup"] == "20261122T000000Z"

    empty = {"local_dir": str(tmp_path / "none")}
    findings = run_area(
        "monitoring", settings_for(tmp_path, metrics, info, backup=empty), root=tmp_path
    )
    assert statuses(findings)["MON-009"] == "fail"
    assert "no complete backup" in findings["MON-009"].detail


def test_no_dkg_yet_and_malformed_info(
    tmp_path: Path, metrics: FakeMetrics, info: FakeSignerInfo
) -> None:
    info.set_keys(None, None)
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-008"] == "warn"
    info.fail(not_json())
    findings = run_area("monitoring", settings_for(tmp_path, metrics, info), root=tmp_path)
    assert statuses(findings)["MON-007"] == "error"
    assert "not JSON" in findings["MON-007"].detail


def test_metrics_port_published_publicly_warns(tmp_path: Path) -> None:
    compose = write(
        tmp_path,
        "/srv/signer/docker-compose.yml",
        "services:\n  sbtc-signer:\n    image: ghcr.io/stacks-sbtc/sbtc:signer-1.3.3\n"
        "    ports:\n      - '4122:4122'\n      - '9184:9184'\n      - '127.0.0.1:8801:8801'\n",
    )
    settings = make_settings(
        tmp_path,
        signer={"prometheus_exporter_endpoint": "0.0.0.0:9184"},
        audit={"compose_files": ["/srv/signer/docker-compose.yml"]},
    )
    findings = run_area("monitoring", settings, root=tmp_path)
    assert statuses(findings)["MON-006"] == "warn"
    assert "sbtc-signer: 0.0.0.0:9184->9184/tcp" in findings["MON-006"].detail
    compose.write_text(compose.read_text().replace("'9184:9184'", "'127.0.0.1:9184:9184'"))
    findings = run_area("monitoring", settings, root=tmp_path)
    assert statuses(findings)["MON-006"] == "pass"


def test_nothing_configured(tmp_path: Path) -> None:
    findings = run_area("monitoring", make_settings(tmp_path), root=tmp_path)
    assert statuses(findings)["MON-001"] == "fail"
    assert {statuses(findings)[i] for i in MON_IDS[1:]} == {"skip"}


NFT_RULESET = (
    Path(__file__).parent / "fixtures" / "audit" / "firewall" / "nft-v4only-docker-user.json"
)


def _exporter_on_all_interfaces(tmp_path: Path, ruleset: dict[str, Any]) -> Any:
    settings = make_settings(tmp_path, signer={"prometheus_exporter_endpoint": "0.0.0.0:9184"})
    return run_area(
        "monitoring", settings, root=tmp_path, outputs={"nft -j list ruleset": json.dumps(ruleset)}
    )


def test_wildcard_exporter_judged_by_the_host_firewall(tmp_path: Path) -> None:
    """Real `nft -j` output (ip filter INPUT: 22, 4122, 8801 accepted, then reject)."""
    ruleset = json.loads(NFT_RULESET.read_text())
    findings = _exporter_on_all_interfaces(tmp_path, ruleset)
    assert statuses(findings)["MON-006"] == "pass"
    assert "closed by the default-deny firewall (nftables" in findings["MON-006"].detail

    accept_9184 = next(
        item for item in ruleset["nftables"] if item.get("rule", {}).get("handle") == 7
    )
    accept_9184["rule"]["expr"][0]["match"]["right"] = 9184
    findings = _exporter_on_all_interfaces(tmp_path, ruleset)
    assert statuses(findings)["MON-006"] == "warn"
    assert "accepts port 9184: 9184/tcp from anywhere" in findings["MON-006"].detail

    permissive = {
        "nftables": [
            item
            for item in ruleset["nftables"]
            if item.get("rule", {}).get("handle") != 8  # no terminal reject; policy accept
        ]
    }
    accept_9184["rule"]["expr"][0]["match"]["right"] = 8801
    findings = _exporter_on_all_interfaces(tmp_path, permissive)
    assert statuses(findings)["MON-006"] == "warn"
    assert "no default-deny inbound policy" in findings["MON-006"].detail
