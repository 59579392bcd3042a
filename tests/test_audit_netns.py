"""The firewall area against real nftables rules, in network namespaces this test creates.

Namespace A is the "signer host": nftables rules loaded into it, listeners on the signer's
P2P port, the event observer port and the metrics port. The firewall checks run inside A
(every command through `ip netns exec A`). Namespace B, joined to A by a veth pair, probes A
with `sbtc-ops audit firewall --probe`. Both namespaces are deleted whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbtc_ops.audit.framework import HostContext, SubprocessRunner, run_audit, select_checks
from sbtc_ops.config import Settings
from tests.support.audit import FIXTURES, statuses
from tests.support.cli import clean_env, sbtc_ops_executable

pytestmark = pytest.mark.netns

HOST_ADDR = "10.213.7.1"
PROBE_ADDR = "10.213.7.2"
LISTEN_PORTS = (4122, 8801, 9184)

LISTENER = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
time.sleep(120)
"""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _namespaces_possible() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    for tool in ("ip", "nft", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class Lab:
    host_ns: str
    probe_ns: str

    def in_host(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.host_ns, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def load_rules(self, ruleset: str) -> None:
        self.in_host("nft", "flush", "ruleset")
        result = self.in_host("nft", "-f", "-", stdin=ruleset)
        assert result.returncode == 0, result.stderr

    def probe(self, target: str, tmp: Path) -> subprocess.CompletedProcess[str]:
        env = clean_env(tmp / "state")
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.probe_ns,
                sbtc_ops_executable(),
                "audit",
                "firewall",
                "--probe",
                target,
                "--connect-timeout",
                "0.5",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            check=False,
            timeout=60,
        )


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = _namespaces_possible()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    lab = Lab(f"sbtc-fw-{tag}", f"sbtc-pr-{tag}")
    veth_host, veth_probe = f"vfh{tag}", f"vfp{tag}"
    created = _ip("netns", "add", lab.host_ns)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {created.stderr.strip()}")
    listener: subprocess.Popen[str] | None = None
    try:
        assert _ip("netns", "add", lab.probe_ns).returncode == 0
        steps = [
            ("link", "add", veth_host, "type", "veth", "peer", "name", veth_probe),
            ("link", "set", veth_host, "netns", lab.host_ns),
            ("link", "set", veth_probe, "netns", lab.probe_ns),
            ("-n", lab.host_ns, "addr", "add", f"{HOST_ADDR}/24", "dev", veth_host),
            ("-n", lab.probe_ns, "addr", "add", f"{PROBE_ADDR}/24", "dev", veth_probe),
            # A global (ULA) IPv6 address: the host is reachable over IPv6 too.
            ("-n", lab.host_ns, "-6", "addr", "add", "fd13:7::1/64", "dev", veth_host, "nodad"),
            ("-n", lab.host_ns, "link", "set", veth_host, "up"),
            ("-n", lab.probe_ns, "link", "set", veth_probe, "up"),
            ("-n", lab.host_ns, "link", "set", "lo", "up"),
            ("-n", lab.probe_ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                pytest.skip(f"cannot build the veth pair: ip {' '.join(step)}: {result.stderr}")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", lab.host_ns, sys.executable, "-c", LISTENER]
            + [str(p) for p in LISTEN_PORTS],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        yield lab
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        _ip("netns", "del", lab.host_ns)
        _ip("netns", "del", lab.probe_ns)
        remaining = _ip("netns", "list").stdout
        assert lab.host_ns not in remaining and lab.probe_ns not in remaining


def _host_audit(lab: Lab) -> dict[str, str]:
    settings = Settings.model_validate({"signer": {"listen_on": ["tcp://0.0.0.0:4122"]}})
    runner = SubprocessRunner(prefix=["ip", "netns", "exec", lab.host_ns])
    ctx = HostContext(settings, runner=runner)
    checks = [
        c for c in select_checks(["firewall"]) if c.id in {"FW-001", "FW-002", "FW-003", "FW-005"}
    ]
    report = run_audit(ctx, checks)
    return statuses(report) | {f"{f.id}.detail": f.detail for f in report.findings}


def _probe_states(result: subprocess.CompletedProcess[str]) -> dict[int, str]:
    import json

    doc = json.loads(result.stdout)
    (finding,) = doc["findings"]
    return {item["port"]: item["state"] for item in finding["data"]["items"]}


def test_default_deny_in_a_namespace_and_probe_from_outside(lab: Lab, tmp_path: Path) -> None:
    lab.load_rules((FIXTURES / "firewall" / "hardened.nft").read_text())
    found = _host_audit(lab)
    assert found["FW-001"] == "pass"
    assert found["FW-002"] == "pass"
    assert found["FW-003"] == "pass", found["FW-003.detail"]
    # 8801 and 9184 listen on 0.0.0.0 inside the namespace: flagged though firewalled.
    assert found["FW-005"] == "warn"
    assert "0.0.0.0:8801/tcp" in found["FW-005.detail"]

    result = lab.probe(f"{HOST_ADDR}:22,4122,8801,9184", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _probe_states(result) == {
        22: "closed",  # allowed, nothing listens: the kernel answers with a RST
        4122: "open",
        8801: "filtered",  # dropped by the policy: no answer
        9184: "filtered",  # allowed only from 10.20.0.0/16
    }


def test_accept_policy_is_caught_by_rules_and_by_the_probe(lab: Lab, tmp_path: Path) -> None:
    lab.load_rules((FIXTURES / "firewall" / "weak.nft").read_text().replace("9184", "8801"))
    found = _host_audit(lab)
    assert found["FW-001"] == "fail"
    assert found["FW-002"] == "fail"
    assert "fd13:7::1" in found["FW-002.detail"]
    assert found["FW-003"] == "fail"  # 8801 accepted from anywhere
    assert "8801/tcp (signer event observer)" in found["FW-003.detail"]

    result = lab.probe(f"{HOST_ADDR}:4122,8801,9184,20443", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    states = _probe_states(result)
    assert states == {4122: "open", 8801: "open", 9184: "open", 20443: "closed"}
    assert "8801 (signer event observer)" in result.stdout
