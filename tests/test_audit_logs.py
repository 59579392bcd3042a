"""audit logs: journald, docker logging drivers, vector, logrotate and local log fixture trees."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.audit.areas.logs import line_time, parse_size, parse_timespan
from sbtc_ops.audit.framework import CommandResult
from tests.support.audit2 import NOW, make_settings, run_area, statuses, write

FIXTURE = Path(__file__).parent / "fixtures" / "audit2" / "logs"
LOG_IDS = [f"LOG-00{i}" for i in range(1, 8)]
CUTOFF = int((NOW - timedelta(days=90)).timestamp())
UNTIL = f"journalctl --output=json --no-pager --lines=1 --until=@{CUTOFF}"
BOOTS = "journalctl --list-boots --output=json --no-pager"
COMPOSE = ["/srv/sbtc/docker-compose.yml", "/srv/nodes/docker-compose.chains.yml"]
LOG_FILES = ["/var/log/bitcoin/debug.log", "/var/log/stacks/*.log"]
BITCOIN_LOG = "/var/lib/docker/containers/7b2d9e7b2d9e/7b2d9e7b2d9e-json.log"
STACKS_LOG = "/var/lib/docker/containers/5f0c1a5f0c1a/5f0c1a5f0c1a-json.log"


def journal_entry(days_ago: int) -> str:
    micros = int((NOW - timedelta(days=days_ago)).timestamp() * 1e6)
    return json.dumps({"__REALTIME_TIMESTAMP": str(micros), "MESSAGE": "Started session 1."})


def good_outputs() -> dict[str, str | CommandResult]:
    return {UNTIL: journal_entry(91) + "\n"}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    rotated = root / "var/log/bitcoin/debug.log.1.gz"
    with gzip.open(rotated, "wt") as handle:
        handle.write("2026-07-01T00:00:00Z Bitcoin Core version v27.2.0 (release build)\n")
    return root


def settings(tmp_path: Path, **audit: Any) -> Any:
    doc: dict[str, Any] = {"compose_files": COMPOSE, "log_files": LOG_FILES}
    doc.update(audit)
    return make_settings(tmp_path, audit=doc)


def container_log(root: Path, path: str, days: float, size: int) -> None:
    first = {"log": "starting\n", "stream": "stdout", "time": _iso(NOW - timedelta(days=days))}
    line = json.dumps({"log": "x" * 200 + "\n", "stream": "stdout", "time": _iso(NOW)}) + "\n"
    body = json.dumps(first) + "\n" + line * max(1, size // len(line))
    write(root, path, body)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def use_default_driver(root: Path) -> None:
    """The reference nodes compose: no logging section, so the daemon's default applies."""
    path = root / "srv/nodes/docker-compose.chains.yml"
    path.write_text(path.read_text().replace("    logging:\n      driver: journald\n", ""))


def test_reference_shaped_host_passes(tmp_path: Path, tree: Path) -> None:
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings) == dict.fromkeys(LOG_IDS, "pass")
    assert "Storage=persistent" in findings["LOG-001"].detail
    assert findings["LOG-005"].data["sinks"] == {"cloudwatch": "aws_cloudwatch_logs"}
    assert "confirm the sink keeps 90 days" in findings["LOG-005"].detail
    assert "/var/log/stacks/*.log: kept ~98 days" in findings["LOG-006"].detail


def test_vendor_drop_in_wins_without_the_local_one(tmp_path: Path, tree: Path) -> None:
    (tree / "etc/systemd/journald.conf.d/sbtc.conf").unlink()
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-001"] == "fail"
    assert "Storage=volatile (/usr/lib/systemd/journald.conf.d/10-vendor.conf)" in (
        findings["LOG-001"].detail
    )
    assert statuses(findings)["LOG-002"] == "fail"
    assert "MaxRetentionSec=1week" in findings["LOG-002"].detail


def test_small_journal_and_auto_storage(tmp_path: Path, tree: Path) -> None:
    write(tree, "/etc/systemd/journald.conf.d/sbtc.conf", "[Journal]\nSystemMaxUse=500M\n")
    (tree / "usr/lib/systemd/journald.conf.d/10-vendor.conf").unlink()
    shutil.rmtree(tree / "var/log/journal")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-001"] == "fail"
    assert "kept in memory only" in findings["LOG-001"].detail
    assert statuses(findings)["LOG-002"] == "warn"


def test_journal_history_short_empty_or_garbled(tmp_path: Path, tree: Path) -> None:
    boots = json.dumps(
        [
            {
                "index": 0,
                "boot_id": "ab",
                "first_entry": int((NOW - timedelta(days=30)).timestamp() * 1e6),
                "last_entry": int(NOW.timestamp() * 1e6),
            }
        ]
    )
    outputs: dict[str, str | CommandResult] = {UNTIL: "", BOOTS: boots}
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=outputs)
    assert statuses(findings)["LOG-003"] == "fail"  # caps are configured: history was cut
    assert "oldest journal entry is 30 days old" in findings["LOG-003"].detail

    write(tree, "/etc/systemd/journald.conf.d/sbtc.conf", "[Journal]\nStorage=persistent\n")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=outputs)
    assert statuses(findings)["LOG-003"] == "fail"  # the vendor drop-in's MaxRetentionSec

    (tree / "usr/lib/systemd/journald.conf.d/10-vendor.conf").unlink()
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=outputs)
    assert statuses(findings)["LOG-003"] == "warn"  # no cap: a young host

    findings = run_area(
        "logs", settings(tmp_path), root=tree, outputs={UNTIL: "-- No entries --\n", BOOTS: "[]"}
    )
    assert statuses(findings)["LOG-003"] == "fail"
    argv = tuple(UNTIL.split())
    no_files = CommandResult(argv, 0, "-- No entries --\n", "No journal files were found.\n")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs={UNTIL: no_files})
    assert statuses(findings)["LOG-003"] == "skip"
    findings = run_area("logs", settings(tmp_path), root=tree, outputs={UNTIL: "{garbage"})
    assert statuses(findings)["LOG-003"] == "error"
    findings = run_area("logs", settings(tmp_path), root=tree, outputs={})
    assert statuses(findings)["LOG-003"] == "skip"
    assert "journalctl is not installed" in findings["LOG-003"].detail


def test_json_file_retention_estimated_from_the_observed_rate(tmp_path: Path, tree: Path) -> None:
    use_default_driver(tree)
    write(
        tree,
        "/etc/docker/daemon.json",
        '{"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}',
    )
    container_log(tree, BITCOIN_LOG, days=5, size=2 * 1024**2)  # 0.4 MiB/day → 75 days
    container_log(tree, STACKS_LOG, days=2, size=100 * 1024)  # → ~600 days
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-004"] == "fail"
    services = {d["detail"].split(":")[0]: d for d in findings["LOG-004"].data["services"]}
    assert services["Bitcoin node (bitcoin)"]["status"] == "fail"
    assert "holds ~75 days at 0.4 MiB/day" in services["Bitcoin node (bitcoin)"]["detail"]
    assert services["Stacks node (stacks-node)"]["status"] == "warn"
    assert "lost when the container is recreated" in services["Stacks node (stacks-node)"]["detail"]
    assert services["sBTC signer (sbtc-signer)"]["status"] == "pass"


def test_unbounded_none_and_unknown_rate(tmp_path: Path, tree: Path) -> None:
    use_default_driver(tree)
    (tree / "etc/docker/daemon.json").unlink()  # docker's default: json-file, no max-size
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-004"] == "warn"
    assert "json-file without max-size" in findings["LOG-004"].detail
    write(tree, "/etc/docker/daemon.json", '{"log-driver": "none"}')
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-004"] == "fail"
    assert "logging driver none" in findings["LOG-004"].detail
    write(tree, "/etc/docker/daemon.json", '{"log-driver": "local"}')
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-004"] == "warn"
    assert "local 100 MiB (/etc/docker/daemon.json), log rate unknown" in (
        findings["LOG-004"].detail
    )
    write(tree, "/etc/docker/daemon.json", "{not json")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-004"] == "error"


def test_vector_without_durable_sink_or_missing(tmp_path: Path, tree: Path) -> None:
    vector = tree / "srv/sbtc/vector/vector.yaml"
    vector.write_text(
        "sources:\n  docker:\n    type: fluent\n    address: 0.0.0.0:24224\n"
        "sinks:\n  out:\n    type: console\n    inputs: [docker]\n"
        "  cw:\n    type: aws_cloudwatch_logs\n    inputs: [metrics_only]\n"
    )
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-005"] == "fail"
    assert "feeds no durable sink" in findings["LOG-005"].detail

    compose = tree / "srv/sbtc/docker-compose.yml"
    compose.write_text(compose.read_text().split("  vector:")[0])
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-005"] == "fail"
    assert "no vector/fluentd service" in findings["LOG-005"].detail

    findings = run_area(
        "logs",
        settings(tmp_path, compose_files=["/srv/nodes/docker-compose.chains.yml"]),
        root=tree,
        outputs=good_outputs(),
    )
    assert statuses(findings)["LOG-005"] == "skip"


def test_vector_toml_configuration(tmp_path: Path, tree: Path) -> None:
    write(
        tree,
        "/srv/sbtc/vector/vector.toml",
        '[sources.in]\ntype = "fluent"\naddress = "0.0.0.0:24224"\n'
        '[sinks.loki]\ntype = "loki"\ninputs = ["in"]\nendpoint = "http://loki:3100"\n',
    )
    compose = tree / "srv/sbtc/docker-compose.yml"
    compose.write_text(compose.read_text().replace("vector.yaml", "vector.toml"))
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-005"] == "pass"
    assert findings["LOG-005"].data["sinks"] == {"loki": "loki"}


def test_logrotate_short_and_size_only(tmp_path: Path, tree: Path) -> None:
    write(tree, "/etc/logrotate.d/stacks-node", "/var/log/stacks/*.log {\n  rotate 4\n}\n")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    # inherits `weekly` from logrotate.conf: 4 × 7 = 28 days
    assert statuses(findings)["LOG-006"] == "fail"
    assert "/var/log/stacks/*.log: kept ~28 days" in findings["LOG-006"].detail
    write(
        tree,
        "/etc/logrotate.conf",
        "rotate 4\ninclude /etc/logrotate.d\n",
    )
    write(tree, "/etc/logrotate.d/stacks-node", "/var/log/stacks/*.log {\n  size 100M\n}\n")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-006"] == "warn"
    assert "size-based rotation only" in findings["LOG-006"].detail


def test_local_logs_too_young_or_unreadable(tmp_path: Path, tree: Path) -> None:
    (tree / "var/log/bitcoin/debug.log.1.gz").unlink()
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-007"] == "fail"
    assert "/var/log/bitcoin/debug.log: oldest line 4 days old" in findings["LOG-007"].detail
    assert "/var/log/stacks/*.log: oldest line 469 days old" in findings["LOG-007"].detail

    write(tree, "/var/log/bitcoin/debug.log", "no time here\nnor here\n")
    findings = run_area("logs", settings(tmp_path), root=tree, outputs=good_outputs())
    assert statuses(findings)["LOG-007"] == "error"
    findings = run_area(
        "logs", settings(tmp_path, log_files=["/var/log/none.log"]), root=tree, outputs={}
    )
    assert statuses(findings)["LOG-007"] == "fail"
    assert "no such file" in findings["LOG-007"].detail


def test_nothing_to_inspect(tmp_path: Path) -> None:
    findings = run_area("logs", make_settings(tmp_path), root=tmp_path)
    assert statuses(findings) == dict.fromkeys(LOG_IDS, "skip")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86400),
        ("1year", 365.25 * 86400),
        ("3month 2w", (3 * 30.44 + 14) * 86400),
        ("3600", 3600),
        ("1h 30min", 5400),
    ],
)
def test_timespans(text: str, seconds: float) -> None:
    assert parse_timespan(text) == pytest.approx(seconds)


def test_bad_timespan_and_sizes() -> None:
    with pytest.raises(ValueError, match="not a systemd time span"):
        parse_timespan("ninety days")
    assert parse_size("16G") == 16 * 1024**3
    assert parse_size("500M") == 500 * 1024**2


@pytest.mark.parametrize(
    ("line", "iso"),
    [
        ('{"timestamp":"2026-11-20T10:00:00.123Z","level":"INFO"}', "2026-11-20T10:00:00.123000"),
        ("2026-11-20T10:00:01Z UpdateTip: new best=0000…", "2026-11-20T10:00:01"),
        ("INFO [1755000000.524190] [main] started", "2025-08-12T12:00:00"),
    ],
)
def test_line_times(line: str, iso: str) -> None:
    moment = line_time(line)
    assert moment is not None
    assert moment.replace(tzinfo=None).isoformat() == iso
