"""A real Prometheus server scrapes a running `sbtc-ops serve` on loopback, with the shipped
alert rules loaded, and returns the expected series and alerts through its HTTP API."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.serve import (
    NO_JOBS,
    populate,
    processes_with,
    running_daemon,
    wait_until,
    write_config,
)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "sbtc-ops-alerts.yml"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not Path(PROMETHEUS).exists(), reason="prometheus is not installed (Debian: prometheus)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, root: Path, target: str) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = root / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "sbtc-ops", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.log = (root / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return json.loads(response.read())

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/-/ready", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = self.api("/api/v1/query", query=expr)
        assert doc["status"] == "success"
        return list(doc["data"]["result"])

    def tail(self) -> str:
        return (self.root / "prometheus.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def prometheus_for() -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(root: Path, target: str) -> Prometheus:
        server = Prometheus(root, target)
        started.append(server)
        wait_until(server.ready, 30, server.tail)
        return server

    yield start
    for server in started:
        server.stop()
        assert server.proc.poll() is not None
        assert not processes_with(f"--storage.tsdb.path={server.root / 'data'}")


def test_prometheus_scrapes_serve_and_evaluates_the_shipped_rules(
    tmp_path: Path, prometheus_for: Any
) -> None:
    state = tmp_path / "state"
    now = time.time()
    populate(state, now=now)
    config = write_config(tmp_path / "sbtc-ops.toml", {"serve": NO_JOBS})
    with running_daemon(config, state) as daemon:
        server = prometheus_for(tmp_path / "prom", f"127.0.0.1:{daemon.port}")
        up = wait_until(lambda: server.query('up{job="sbtc-ops"} == 1'), 30, server.tail)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{daemon.port}"

        endpoints = wait_until(lambda: server.query("sbtc_ops_chain_endpoint_up"), 15)
        by_endpoint = {r["metric"]["endpoint"]: float(r["value"][1]) for r in endpoints}
        assert by_endpoint == {"http://stacks-node:20443": 1.0, "https://api.hiro.so": 0.0}

        backup = server.query('sbtc_ops_last_backup_success_timestamp_seconds{kind="full"}')
        assert float(backup[0]["value"][1]) == pytest.approx(now - 86400 + 3600)
        age = server.query("sbtc_ops_last_backup_success_age_seconds")
        assert 82_800 <= float(age[0]["value"][1]) < 82_800 + 180  # plus the time since populate
        match = server.query("sbtc_ops_aggregate_key_match")
        assert float(match[0]["value"][1]) == 1.0
        runs = server.query('sbtc_ops_job_runs_total{task="backup", outcome="ok"}')
        assert float(runs[0]["value"][1]) == 7.0
        info = server.query("sbtc_ops_build_info")
        assert info[0]["metric"]["version"]

        # The shipped rules run against the scraped series: a critical audit finding fires at
        # once, the endpoint-down alert waits out its 15 minutes as pending.
        def alerts() -> dict[str, str]:
            found = server.api("/api/v1/alerts")["data"]["alerts"]
            return {a["labels"]["alertname"]: a["state"] for a in found}

        states = wait_until(
            lambda: (lambda a: a if "SbtcOpsCriticalAuditFinding" in a else None)(alerts()), 20
        )
        assert states["SbtcOpsCriticalAuditFinding"] == "firing"
        assert states.get("SbtcOpsChainEndpointDown") == "pending"
        for quiet in ("SbtcOpsBackupTooOld", "SbtcOpsVerifyFailed", "SbtcOpsAggregateKeyMismatch"):
            assert quiet not in states
        rules = server.api("/api/v1/rules")["data"]["groups"][0]["rules"]
        assert all(rule["health"] == "ok" for rule in rules), rules
        assert daemon.terminate() == 0
