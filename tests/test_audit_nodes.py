"""audit nodes: Bitcoin Core JSON-RPC and Stacks /v2/info fakes, Config.toml, hardware."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.audit.framework import CommandResult
from sbtc_ops.host.roles import service_role
from tests.fakes.bitcoind import FakeBitcoind
from tests.fakes.http_base import http_error, raw
from tests.fakes.stacks_node import FakeStacksNode
from tests.fakes.stacks_node import http_error as stacks_error
from tests.fakes.stacks_node import slow as stacks_slow
from tests.support.audit2 import make_settings, run_area, statuses, write

NODE_IDS = [f"NODE-00{i}" for i in range(1, 10)]
DEPLOYER = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
DEDICATED_CONFIG = f"""
[node]
working_dir = "/stacks/data"
rpc_bind = "0.0.0.0:20443"

[[events_observer]]
endpoint = "sbtc-signer:8801"
events_keys = ["{DEPLOYER}.sbtc-registry::print"]
"""
DF = "Mounted on          1B-blocks          Avail\n/data {size} {avail}\n"


def cpuinfo(count: int) -> str:
    return "".join(f"processor\t: {i}\nmodel name\t: Test CPU\n\n" for i in range(count))


def meminfo(gib: float) -> str:
    return f"MemTotal:       {int(gib * 1024 * 1024)} kB\nMemFree:        1000 kB\n"


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as fake:
        yield fake


@pytest.fixture
def stacks() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as node:
        node.info["burn_block_height"] = 871210
        yield node


def host_tree(root: Path, cpus: int = 8, gib: float = 31.3, config: str = DEDICATED_CONFIG) -> None:
    write(root, "/proc/cpuinfo", cpuinfo(cpus))
    write(root, "/proc/meminfo", meminfo(gib))
    write(root, "/etc/stacks/Config.toml", config)


def settings_for(tmp_path: Path, bitcoind: FakeBitcoind | None, stacks: Any, **audit: Any) -> Any:
    doc: dict[str, Any] = {
        "stacks_node_config": "/etc/stacks/Config.toml",
        "chainstate_paths": ["/data/bitcoin", "/data/stacks"],
    }
    if bitcoind is not None:
        doc["bitcoin_rpc_url"] = bitcoind.rpc_url()
    if stacks is not None:
        doc["stacks_node_url"] = stacks.url
    doc.update(audit)
    return make_settings(tmp_path, audit=doc)


def df_outputs(size: int = 2_000 * 10**9, avail: int = 800 * 10**9) -> dict[str, str]:
    return {
        f"df -B1 --output=target,size,avail /data/{name}": DF.format(size=size, avail=avail)
        for name in ("bitcoin", "stacks")
    }


def test_healthy_host_passes_every_node_check(
    tmp_path: Path, bitcoind: FakeBitcoind, stacks: FakeStacksNode
) -> None:
    host_tree(tmp_path)
    findings = run_area(
        "nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path, outputs=df_outputs()
    )
    assert statuses(findings) == dict.fromkeys(NODE_IDS, "pass")
    assert findings["NODE-002"].data["version"] == 280100
    assert findings["NODE-009"].data["filesystems"]["/data"]["paths"] == [
        "/data/bitcoin",
        "/data/stacks",
    ]
    methods = [json.loads(r.body)["method"] for r in bitcoind.requests]
    assert sorted(methods) == ["getblockchaininfo", "getindexinfo", "getnetworkinfo"]


def test_unsynced_pruned_old_bitcoind_fails(
    tmp_path: Path, bitcoind: FakeBitcoind, stacks: FakeStacksNode
) -> None:
    host_tree(tmp_path)
    bitcoind.blockchain.update(
        chain="test",
        initialblockdownload=True,
        verificationprogress=0.5,
        headers=871300,
        pruned=True,
    )
    bitcoind.network["version"] = 240100
    bitcoind.indexes = {}
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path)
    assert statuses(findings)["NODE-001"] == "fail"
    detail = findings["NODE-001"].detail
    for words in ("'test'", "initial block download", "90 blocks behind", "pruned"):
        assert words in detail
    assert statuses(findings)["NODE-002"] == "fail"
    assert statuses(findings)["NODE-003"] == "fail"


def test_rpc_error_objects_warmup_warns_and_others_error(
    tmp_path: Path, bitcoind: FakeBitcoind, stacks: FakeStacksNode
) -> None:
    host_tree(tmp_path)
    bitcoind.rpc_error("getblockchaininfo", -28, "Loading block index…")
    bitcoind.rpc_error("getnetworkinfo", -1, "internal bug")
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path)
    assert statuses(findings)["NODE-001"] == "warn"
    assert "Loading block index" in findings["NODE-001"].detail
    assert statuses(findings)["NODE-002"] == "error"
    assert "error -1: internal bug" in findings["NODE-002"].detail
    # getindexinfo unknown to old nodes: JSON-RPC 1.0 answers HTTP 404 with the error object
    bitcoind.rpc_error("getindexinfo", -32601, "Method not found")
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path)
    assert statuses(findings)["NODE-003"] == "error"
    assert "-32601: Method not found" in findings["NODE-003"].detail


def test_wrong_rpc_password_is_an_error_and_never_printed(
    tmp_path: Path, bitcoind: FakeBitcoind, stacks: FakeStacksNode
) -> None:
    host_tree(tmp_path)
    wrong = "Wr0ng-Passw0rd-zz"
    settings = settings_for(tmp_path, None, stacks, bitcoin_rpc_url=bitcoind.rpc_url(wrong))
    findings = run_area("nodes", settings, root=tmp_path)
    assert [statuses(findings)[i] for i in ("NODE-001", "NODE-002", "NODE-003")] == ["error"] * 3
    assert "rejected the credentials: HTTP 401" in findings["NODE-001"].detail
    dumped = json.dumps([f.to_json() for f in findings.values()])
    assert wrong not in dumped


def test_percent_encoded_rpc_password(tmp_path: Path, stacks: FakeStacksNode) -> None:
    host_tree(tmp_path)
    with FakeBitcoind(password="p@ss:w/rd%") as bitcoind:
        url = f"http://bitcoin:p%40ss%3Aw%2Frd%25@127.0.0.1:{bitcoind.port}"
        findings = run_area(
            "nodes", settings_for(tmp_path, None, stacks, bitcoin_rpc_url=url), root=tmp_path
        )
    assert statuses(findings)["NODE-001"] == "pass"


def test_offline_slow_and_malformed_sources(tmp_path: Path, stacks: FakeStacksNode) -> None:
    host_tree(tmp_path)
    stopped = FakeBitcoind().start()
    url = stopped.rpc_url()
    stopped.stop()
    settings = settings_for(tmp_path, None, stacks, bitcoin_rpc_url=url, network_timeout_s=0.5)
    stacks.fail(stacks_slow(3))
    findings = run_area("nodes", settings, root=tmp_path)
    assert statuses(findings)["NODE-001"] == "fail"
    assert "unreachable" in findings["NODE-001"].detail
    assert statuses(findings)["NODE-004"] == "fail"
    assert "did not answer within 0.5s" in findings["NODE-004"].detail

    stacks.clear_failures()
    with FakeBitcoind() as garbled:
        garbled.fail(raw(b'{"result": {"chain": "main"'))
        settings = settings_for(tmp_path, garbled, stacks)
        findings = run_area("nodes", settings, root=tmp_path)
    assert statuses(findings)["NODE-001"] == "error"
    assert "not JSON" in findings["NODE-001"].detail


def test_stacks_node_behind_wrong_network_or_failing(
    tmp_path: Path, bitcoind: FakeBitcoind, stacks: FakeStacksNode
) -> None:
    host_tree(tmp_path)
    stacks.info.update(burn_block_height=871200, network_id=0x80000000, is_fully_synced=False)
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path)
    assert statuses(findings)["NODE-004"] == "fail"
    assert "871200 vs Bitcoin Core's 871210" in findings["NODE-004"].detail
    assert statuses(findings)["NODE-005"] == "fail"

    stacks.fail(stacks_error(500, "Internal Server Error"), on="/v2/info")
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, stacks), root=tmp_path)
    assert statuses(findings)["NODE-004"] == "error"
    assert "HTTP 500" in findings["NODE-004"].detail


@pytest.mark.parametrize(
    ("config", "expected", "words"),
    [
        (
            DEDICATED_CONFIG
            + '\n[[events_observer]]\nendpoint = "stacks-api:3700"\nevents_keys = ["*"]\n',
            "warn",
            "also feeds stacks-api:3700 (*)",
        ),
        (
            '[node]\nminer = true\n[[events_observer]]\nendpoint = "api:3700"\n',
            "fail",
            "no [[events",
        ),
        (
            DEDICATED_CONFIG + "\n[miner]\npre_nakamoto_mock_signing = true\n",
            "warn",
            "mock_signing",
        ),
        (
            '[[events_observer]]\nendpoint = "sbtc-signer:8801"\nevents_keys = ["stx"]\n',
            "warn",
            "does not receive",
        ),
    ],
)
def test_shared_stacks_node_is_flagged(
    tmp_path: Path, config: str, expected: str, words: str
) -> None:
    host_tree(tmp_path, config=config)
    findings = run_area("nodes", settings_for(tmp_path, None, None), root=tmp_path)
    assert statuses(findings)["NODE-006"] == expected
    assert words in findings["NODE-006"].detail


def test_hardware_below_minimums(tmp_path: Path) -> None:
    host_tree(tmp_path, cpus=4, gib=7.6)
    outputs = df_outputs(size=1_000 * 10**9, avail=50 * 10**9)
    findings = run_area("nodes", settings_for(tmp_path, None, None), root=tmp_path, outputs=outputs)
    assert statuses(findings)["NODE-007"] == "warn"
    assert statuses(findings)["NODE-008"] == "fail"
    assert statuses(findings)["NODE-009"] == "fail"
    assert "low free space" in findings["NODE-009"].detail
    assert "docs.stacks.co" in findings["NODE-008"].detail

    host_tree(tmp_path, cpus=2, gib=15.6)
    outputs = df_outputs(size=2_000 * 10**9, avail=100 * 10**9)
    findings = run_area("nodes", settings_for(tmp_path, None, None), root=tmp_path, outputs=outputs)
    assert statuses(findings)["NODE-007"] == "fail"
    assert statuses(findings)["NODE-008"] == "warn"  # a 16 GB machine shows ~15.6 GiB
    assert statuses(findings)["NODE-009"] == "warn"


def test_df_garbage_is_an_error_and_failure_a_skip(tmp_path: Path) -> None:
    host_tree(tmp_path)
    outputs: dict[str, str | CommandResult] = {
        "df -B1 --output=target,size,avail /data/bitcoin": "garbage",
    }
    findings = run_area("nodes", settings_for(tmp_path, None, None), root=tmp_path, outputs=outputs)
    assert statuses(findings)["NODE-009"] == "error"
    argv = ("df", "-B1", "--output=target,size,avail", "/data/bitcoin")
    outputs = {" ".join(argv): CommandResult(argv, 1, "", "df: /data/bitcoin: No such file")}
    findings = run_area("nodes", settings_for(tmp_path, None, None), root=tmp_path, outputs=outputs)
    assert statuses(findings)["NODE-009"] == "skip"
    assert "No such file" in findings["NODE-009"].detail


def test_nothing_configured_skips_with_reasons(tmp_path: Path) -> None:
    findings = run_area("nodes", make_settings(tmp_path), root=tmp_path)
    for check_id in ("NODE-001", "NODE-004", "NODE-006", "NODE-009"):
        assert findings[check_id].status.value == "skip", check_id
    assert "audit.bitcoin_rpc_url" in findings["NODE-001"].detail
    assert "audit.stacks_node_config" in findings["NODE-006"].detail
    assert "/proc/cpuinfo does not exist" in findings["NODE-007"].detail


def test_http_error_helper_shapes(tmp_path: Path, bitcoind: FakeBitcoind) -> None:
    host_tree(tmp_path)
    bitcoind.fail(http_error(503, "Work queue depth exceeded"))
    findings = run_area("nodes", settings_for(tmp_path, bitcoind, None), root=tmp_path)
    assert statuses(findings)["NODE-001"] == "error"
    assert "HTTP 503" in findings["NODE-001"].detail


@pytest.mark.parametrize(
    ("name", "image", "role"),
    [
        ("sbtc-signer", "ghcr.io/stacks-sbtc/sbtc:signer-1.3.3@sha256:ab", "signer"),
        ("blocklist", "ghcr.io/stacks-sbtc/sbtc:blocklist-client-1.3.3", None),
        ("anything", "blockstack/stacks-core:3.1.0.0.5", "stacks"),
        ("api", "hirosystems/stacks-blockchain-api:8.0.0", None),
        ("signer-for-stacks", "blockstack/stacks-signer:3.1.0.0.5.0", None),
        ("btc", "lncm/bitcoind:v28.0", "bitcoin"),
        ("btc", "bitcoin/bitcoin:28.1", "bitcoin"),
        ("bitcoin", "registry.local/custom-node:1", "bitcoin"),  # by the reference name
        ("postgres", "postgres:16", None),
    ],
)
def test_service_roles(name: str, image: str, role: str | None) -> None:
    assert service_role(name, {"image": image}) == role
