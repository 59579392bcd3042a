"""audit signer-config (CFG-…): configs of each release's shape with planted drift, a registry
stand-in whose signer set differs, a bitcoind stand-in's height, a real signer database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sbtc_ops.audit.framework import Finding
from sbtc_ops.signer.knowledge import load
from tests.fakes.bitcoind import FakeBitcoind
from tests.fakes.signer_info import FakeSignerInfo
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.audit2 import make_settings, run_area, statuses, write
from tests.support.pg import SourceServer, new_signer_database
from tests.support.signer_configs import config_for, sample_values, signer_keys, to_toml

AREA = "signer-config"


def audit_config(
    tmp_path: Path,
    doc: dict[str, Any],
    *,
    version: str | None = "1.3.3",
    env: str | None = None,
    audit: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Finding]:
    config = write(tmp_path, "/signer/signer-config.toml", to_toml(doc))
    signer: dict[str, Any] = {"config_path": str(config)}
    if env is not None:
        signer["env_file"] = str(write(tmp_path, "/signer/.env", env))
    audit_doc = dict(audit or {})
    if version is not None:
        audit_doc["signer_version"] = version
    settings = make_settings(tmp_path, signer=signer, audit=audit_doc, **sections)
    return run_area(AREA, settings, root=Path("/"))


@pytest.mark.parametrize("version", load().versions)
def test_a_config_of_each_release_shape_is_clean_for_that_release(
    tmp_path: Path, version: str
) -> None:
    found = audit_config(tmp_path, config_for(version), version=version)
    assert found["CFG-001"].status.value == "pass", found["CFG-001"].detail
    assert found["CFG-002"].status.value == "pass", found["CFG-002"].detail
    assert found["CFG-003"].status.value == "pass", found["CFG-003"].detail


def test_planted_removed_and_unknown_keys_are_named_with_the_release_that_removed_them(
    tmp_path: Path,
) -> None:
    doc = config_for(
        "1.3.3",
        extra={
            "bitcoin.block_hash_stream_endpoints": ["tcp://bitcoin:28332"],
            "signer.dkg_target_rounds": 1,
            "signer.bitcoin_block_horizon": 3000,  # the mainnet sample's no-op key
            "signer.dkg_verfication_window": 5,  # a typo
        },
    )
    finding = audit_config(tmp_path, doc)["CFG-001"]
    assert finding.status.value == "warn"
    assert "bitcoin.block_hash_stream_endpoints (removed in v1.1.0)" in finding.detail
    assert "signer.dkg_target_rounds (removed in v1.2.0)" in finding.detail
    assert finding.data["unknown"] == [
        "signer.bitcoin_block_horizon",
        "signer.dkg_verfication_window",
    ]


def test_an_old_config_on_an_upgraded_signer_and_a_new_key_on_an_old_one(tmp_path: Path) -> None:
    upgraded = audit_config(tmp_path, config_for("1.0.0"), version="1.3.3")["CFG-001"]
    assert upgraded.status.value == "warn"
    assert set(upgraded.data["removed"]) == {
        "bitcoin.block_hash_stream_endpoints",
        "signer.dkg_target_rounds",
    }
    early = audit_config(
        tmp_path, config_for("1.2.0", extra={"bitcoin.timeout": 10}), version="1.2.0"
    )["CFG-001"]
    assert early.status.value == "warn"
    assert "bitcoin.timeout (added in v1.3.0)" in early.detail


def test_v1_0_requires_the_zmq_endpoints_that_v1_1_removed(tmp_path: Path) -> None:
    doc = config_for("1.0.0", drop=["bitcoin.block_hash_stream_endpoints"])
    old = audit_config(tmp_path, doc, version="1.0.3")["CFG-002"]
    assert old.status.value == "fail"
    assert old.data["missing"] == ["bitcoin.block_hash_stream_endpoints"]
    assert audit_config(tmp_path, doc, version="1.1.0")["CFG-002"].status.value == "pass"


def test_required_keys_may_come_from_the_env_file(tmp_path: Path) -> None:
    doc = config_for("1.3.3", drop=["signer.db_endpoint", "signer.private_key"])
    missing = audit_config(tmp_path, doc)
    assert missing["CFG-002"].status.value == "fail"
    assert missing["CFG-002"].data["missing"] == ["signer.db_endpoint", "signer.private_key"]
    assert missing["CFG-004"].status.value == "skip"
    env = (
        "SIGNER_SIGNER__DB_ENDPOINT=postgresql://signer:pw-123456@postgres:5432/signer\n"
        "SIGNER_SIGNER__PRIVATE_KEY=" + "7b" * 32 + "\n"
    )
    found = audit_config(tmp_path, doc, env=env)
    assert statuses(found)["CFG-002"] == "pass"
    assert found["CFG-004"].status.value == "pass"
    assert "7b7b7b7b" not in found["CFG-004"].detail


def test_a_private_key_in_the_config_file_is_flagged_without_showing_it(tmp_path: Path) -> None:
    finding = audit_config(tmp_path, config_for("1.3.3"))["CFG-004"]
    assert finding.status.value == "warn"
    assert "signer-config.toml" in finding.detail
    assert sample_values()["signer.private_key"] not in finding.detail


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"signer.deployer": "SN3R84XZYA63QS28932XQF3G1J8R9PC3W76P9CSQS"}, "is not a mainnet"),
        ({"signer.deployer": "SP000000000000000000002Q6VF78"}, "not the mainnet sBTC deployer"),
        ({"bitcoin.fallback_fee": 10}, "fallback_fee"),
        ({"signer.network": "regtest"}, "sbtc-ops is set to mainnet"),
    ],
)
def test_network_and_deployer_drift_fails(
    tmp_path: Path, extra: dict[str, Any], words: str
) -> None:
    finding = audit_config(tmp_path, config_for("1.3.3", extra=extra))["CFG-003"]
    assert finding.status.value == "fail"
    assert words in finding.detail


def test_version_comes_from_the_compose_image_tag(tmp_path: Path) -> None:
    compose = write(
        tmp_path,
        "/deploy/docker-compose.yml",
        "services:\n  sbtc-signer:\n    image: ghcr.io/stacks-sbtc/sbtc:signer-v1.0.3\n",
    )
    found = audit_config(
        tmp_path, config_for("1.3.3"), version=None, docker={"compose_files": [str(compose)]}
    )
    assert found["CFG-001"].data["version"] == "1.0.3"
    assert "signer-v1.0.3" in found["CFG-001"].data["version_source"]
    assert "bitcoin.timeout (added in v1.3.0)" in found["CFG-001"].detail
    # v1.0.3 still requires the ZMQ endpoints a v1.3.3-shaped config no longer has
    assert found["CFG-002"].data["missing"] == ["bitcoin.block_hash_stream_endpoints"]


def test_version_comes_from_build_info_when_no_image_names_one(tmp_path: Path) -> None:
    with FakeSignerInfo() as info:
        info.info["build_info"]["git_revision"] = load().release("1.2.0").commit
        found = audit_config(
            tmp_path,
            config_for("1.2.0"),
            version=None,
            audit={"signer_info_url": f"{info.url}/info"},
        )
        assert found["CFG-001"].data["version"] == "1.2.0"
        info.info["build_info"]["git_revision"] = "0123456789abcdef"
        unknown = audit_config(
            tmp_path,
            config_for("1.2.0"),
            version=None,
            audit={"signer_info_url": f"{info.url}/info"},
        )
        assert unknown["CFG-001"].status.value == "skip"
        assert "0123456789ab" in unknown["CFG-001"].detail


# -- the registry and the chain ---------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as node:
        yield node


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as fake:
        yield fake


def _chain_sections(node: FakeStacksNode, bitcoind: FakeBitcoind) -> dict[str, Any]:
    return {
        "stacks": {"endpoints": [node.url], "retries": 0},
        "audit": {"stacks_node_url": node.url, "bitcoin_rpc_url": bitcoind.rpc_url()},
    }


def test_bootstrap_set_equal_to_the_registry_passes(
    tmp_path: Path, registry: FakeStacksNode, bitcoind: FakeBitcoind
) -> None:
    keys = signer_keys(4)
    registry.set_signer_data(bytes.fromhex(keys[0]), [bytes.fromhex(k) for k in keys], 3)
    found = audit_config(tmp_path, config_for("1.3.3"), **_chain_sections(registry, bitcoind))
    assert found["CFG-005"].status.value == "pass", found["CFG-005"].detail


def test_a_registry_whose_signer_set_differs_means_a_dkg_round_or_a_stale_config(
    tmp_path: Path, registry: FakeStacksNode, bitcoind: FakeBitcoind
) -> None:
    rotated = [*signer_keys(3), signer_keys(1, seed=5)[0]]
    registry.set_signer_data(bytes.fromhex(rotated[0]), [bytes.fromhex(k) for k in rotated], 2)
    found = audit_config(tmp_path, config_for("1.3.3"), **_chain_sections(registry, bitcoind))
    finding = found["CFG-005"]
    assert finding.status.value == "warn"
    assert "1 configured signer(s) not in the registry" in finding.detail
    assert "threshold 3 configured, 2 in the registry" in finding.detail
    assert "will ask for a DKG round" in finding.detail
    assert "config is stale" in finding.detail


def test_dkg_min_height_ahead_of_the_chain_is_a_scheduled_round(
    tmp_path: Path, registry: FakeStacksNode, bitcoind: FakeBitcoind
) -> None:
    bitcoind.blockchain["blocks"] = 880000
    doc = config_for("1.3.3", extra={"signer.dkg_min_bitcoin_block_height": 880088})
    finding = audit_config(tmp_path, doc, **_chain_sections(registry, bitcoind))["CFG-006"]
    assert finding.status.value == "warn"
    assert "88 blocks from the tip 880000" in finding.detail
    unset = audit_config(tmp_path, config_for("1.3.3"), **_chain_sections(registry, bitcoind))
    assert unset["CFG-006"].status.value == "pass"


@pytest.mark.postgres
def test_registry_and_min_height_judged_with_the_signer_database(
    tmp_path: Path,
    source_server: SourceServer,
    registry: FakeStacksNode,
    bitcoind: FakeBitcoind,
) -> None:
    url, _ = new_signer_database(source_server, target_mb=1.0, seed=3)
    keys = signer_keys(4)
    with psycopg.connect(url, autocommit=True) as conn:
        # The newest shares already use the configured set: the rotation awaits the registry.
        conn.execute(
            "UPDATE sbtc_signer.dkg_shares SET signer_set_public_keys = %s, "
            "signature_share_threshold = 3 WHERE created_at = "
            "(SELECT max(created_at) FROM sbtc_signer.dkg_shares)",
            ([bytes.fromhex(k) for k in keys],),
        )
        row = conn.execute(
            "SELECT max(started_at_bitcoin_block_height) FROM sbtc_signer.dkg_shares "
            "WHERE dkg_shares_status <> 'failed'"
        ).fetchone()
    assert row is not None
    newest_start = int(row[0])
    registry.set_signer_data(None, [bytes.fromhex(k) for k in signer_keys(3, seed=7)], 2)
    bitcoind.blockchain["blocks"] = newest_start + 100
    sections = _chain_sections(registry, bitcoind)
    sections["db"] = {"url": url}

    done = config_for("1.3.3", extra={"signer.dkg_min_bitcoin_block_height": newest_start})
    found = audit_config(tmp_path, done, **sections)
    assert "registry update (rotate-keys) is pending" in found["CFG-005"].detail
    assert found["CFG-006"].status.value == "pass", found["CFG-006"].detail

    pending = config_for("1.3.3", extra={"signer.dkg_min_bitcoin_block_height": newest_start + 1})
    finding = audit_config(tmp_path, pending, **sections)["CFG-006"]
    assert finding.status.value == "warn"
    assert "no DKG round started after it" in finding.detail
    assert "db-secret-pw" not in finding.detail


@pytest.mark.parametrize(
    ("observer", "expected", "words"),
    [
        ("timeout_ms = 10_000\n", "pass", "timeout_ms = 10000"),
        ("timeout_ms = 1_000\n", "warn", "below the reference 10000"),
        ("", "warn", "sets no timeout_ms"),
    ],
)
def test_the_stacks_nodes_observer_timeout_for_the_signer(
    tmp_path: Path, observer: str, expected: str, words: str
) -> None:
    node_config = write(
        tmp_path,
        "/stacks/Config.toml",
        '[[events_observer]]\nendpoint = "sbtc-signer:8801"\n'
        'events_keys = ["SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-registry::print"]\n'
        + observer,
    )
    found = audit_config(
        tmp_path, config_for("1.3.3"), audit={"stacks_node_config": str(node_config)}
    )
    assert found["CFG-007"].status.value == expected
    assert words in found["CFG-007"].detail


def test_a_threshold_that_is_not_a_number_is_an_error_naming_the_key(
    tmp_path: Path, registry: FakeStacksNode, bitcoind: FakeBitcoind
) -> None:
    env = "SIGNER_SIGNER__BOOTSTRAP_SIGNATURES_REQUIRED=three\n"
    found = audit_config(
        tmp_path, config_for("1.3.3"), env=env, **_chain_sections(registry, bitcoind)
    )
    assert found["CFG-005"].status.value == "error"
    assert (
        "signer.bootstrap_signatures_required = 'three' is not an integer"
        in found["CFG-005"].detail
    )
