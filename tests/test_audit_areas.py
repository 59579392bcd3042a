"""The access, firewall, secrets and key-protection areas against realistic fixture hosts.

`weak`: a host set up from the reference mainnet compose without hardening (cloud-init
sshd drop-in, NOPASSWD sudo, devnet credentials and key, Bitcoin RPC published with
rpcallowip=0.0.0.0/0, accept-policy nftables). `hardened`: the same stack done right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbtc_ops.audit.framework import (
    AuditReport,
    CommandResult,
    Finding,
    HostContext,
    RecordedRunner,
    run_audit,
)
from sbtc_ops.audit.framework import select_checks as select
from sbtc_ops.state import StateStore
from tests.support.audit import FIXTURE_NOW, FIXTURES, load_scenario, statuses

MY_AREAS = ("access", "firewall", "secrets", "keys")
WEAK_MODES = {"opt/sbtc/.env": 0o644, "opt/sbtc/nodes/.env": 0o644}
HARDENED_MODES = {"opt/sbtc/.env": 0o600, "opt/sbtc/nodes/.env": 0o600}
HARDENED_PUBLIC_KEY = "02bdcdfb5dc1ee8efee03abe2280673caf18c7896a015b63e501e99dd632b8a75e"


def by_id(report: AuditReport) -> dict[str, Finding]:
    return {finding.id: finding for finding in report.findings}


def test_weak_host_exact_findings(tmp_path: Path) -> None:
    scenario = load_scenario("weak", tmp_path, WEAK_MODES)
    report = scenario.audit(*MY_AREAS)
    assert statuses(report) == {
        "SSH-001": "fail",
        "SSH-002": "pass",
        "SSH-003": "fail",
        "SSH-004": "fail",
        "SSH-005": "fail",
        "SSH-006": "pass",
        "SSH-007": "warn",
        "SUDO-001": "fail",
        "DB-001": "fail",
        "DB-002": "fail",
        "IMG-001": "warn",
        "FW-001": "fail",
        "FW-002": "fail",
        "FW-003": "fail",  # no default deny: every port is open, not only 9184
        "FW-004": "fail",
        "FW-005": "warn",
        "FW-006": "fail",
        "SEC-001": "warn",
        "SEC-002": "fail",
        "SEC-003": "fail",
        "SEC-004": "fail",
        "SEC-005": "warn",
        "KEY-001": "fail",
        "KEY-002": "fail",
        "KEY-003": "warn",
    }
    found = by_id(report)
    # sshd: the cloud-init drop-in and the backup user's Match block are both seen.
    assert "(global, user backup)" in found["SSH-001"].detail
    # Every non-FIDO key named with type, comment and the fingerprint ssh-keygen -l prints.
    keys = {
        (k["user"], k["type"], k["comment"], k["fingerprint"])
        for k in found["SSH-005"].data["items"]
    }
    assert keys == {
        (
            "root",
            "ecdsa-sha2-nistp256",
            "root@bastion",
            "SHA256:3UZP+wzEixRA2Fvg1KmWPxkbK7fxGriHmk71xTBwPbo",
        ),
        (
            "alice",
            "ssh-ed25519",
            "alice@laptop",
            "SHA256:Ce0af9G1KvrI4TFaF2JV/uQaIV6NGlXDg7T/SSr0XDs",
        ),
        ("bob", "ssh-rsa", "bob ops key", "SHA256:RWxEChaRPNiBD7sl9GRIF798tEPLcfDELBmNcHIeSTg"),
    }
    assert found["SSH-005"].data["fido_keys"] == 2
    assert "SHA256:ISbb33JTQTtHw1AMoiYrdaG8wnBzLgczKP5Z4ekMVT8" in found["SSH-007"].detail
    # sudo: the cloud-init rule counts, the file with a dot in its name (ignored by sudo) not.
    assert [i["file"] for i in found["SUDO-001"].data["items"]] == [
        "/etc/sudoers.d/90-cloud-init-users"
    ]
    assert "0.0.0.0/0" in found["DB-002"].detail
    unpinned = {i["service"] for i in found["IMG-001"].data["items"]}
    assert unpinned == {"sbtc-signer", "vector"}
    # Docker bypass: RPC (with rpcallowip=0.0.0.0/0), ZMQ, metrics… but not loopback 8801
    # or the allowed P2P port 4122.
    published = [i["published"] for i in found["FW-004"].data["items"]]
    assert "bitcoin: 0.0.0.0:8332->8332/tcp" in published
    assert "bitcoin: 0.0.0.0:28332->28332/tcp" in published
    assert "stacks-blockchain: 0.0.0.0:20443->20443/tcp" in published
    assert "sbtc-signer: 0.0.0.0:9184->9184/tcp" in published
    assert not any(":8801->" in p or ":4122->" in p for p in published)
    assert "rpcallowip=0.0.0.0/0" in found["FW-004"].detail
    assert "9184/tcp" in found["FW-003"].detail
    overdue = {i["name"] for i in found["SEC-002"].data["items"] if "days_overdue" in i}
    assert overdue == {"postgres password", "aws cloudwatch access key"}
    due_soon = {i["name"] for i in found["SEC-002"].data["items"] if "days_left" in i}
    assert due_soon == {"bitcoin rpc password"}
    assert {i["file"] for i in found["SEC-004"].data["items"]} == {
        "/opt/sbtc/.env",
        "/opt/sbtc/nodes/.env",
    }
    assert {i["secret"] for i in found["SEC-005"].data["items"]} == {
        "postgres password",
        "aws cloudwatch access key",
    }
    assert "default.toml" in found["KEY-002"].detail


def test_hardened_host_passes(tmp_path: Path) -> None:
    scenario = load_scenario("hardened", tmp_path, HARDENED_MODES)
    with StateStore.open(scenario.state_dir) as store:
        store.record_event(
            "key-backup-verify", HARDENED_PUBLIC_KEY, "ok", at=FIXTURE_NOW.timestamp() - 86400
        )
    report = scenario.audit(*MY_AREAS)
    not_passing = {k: v for k, v in statuses(report).items() if v != "pass"}
    # The role's attributes need a live database; everything else passes.
    assert not_passing == {"DB-001": "skip"}
    assert len(report.findings) == 25
    assert report.score == 100
    found = by_id(report)
    assert "verify-required" in found["SSH-007"].detail
    assert found["KEY-002"].data["public_key"] == HARDENED_PUBLIC_KEY


@pytest.mark.parametrize(
    ("outcome", "age_days", "expected"),
    [("ok", 10, "pass"), ("ok", 400, "warn"), ("mismatch", 1, "warn")],
)
def test_key_backup_record(tmp_path: Path, outcome: str, age_days: int, expected: str) -> None:
    scenario = load_scenario("hardened", tmp_path, HARDENED_MODES)
    with StateStore.open(scenario.state_dir) as store:
        at = FIXTURE_NOW.timestamp() - age_days * 86400
        store.record_event("key-backup-verify", HARDENED_PUBLIC_KEY, outcome, at=at)
        # A record for another key does not count.
        store.record_event("key-backup-verify", "02" + "11" * 32, "ok", at=FIXTURE_NOW.timestamp())
    report = scenario.audit("keys")
    assert statuses(report)["KEY-003"] == expected


def test_key_file_source_and_garbage_key(tmp_path: Path) -> None:
    scenario = load_scenario("hardened", tmp_path, HARDENED_MODES)
    key_file = scenario.root / "etc" / "signer.key"
    key_file.write_text(
        "0x" + "41634762d89dfa09133a4a8e9c1378d0161d29cd0a9433b51f1e3d32947a73dc01\n"
    )
    key_file.chmod(0o640)
    settings = scenario.settings(signer={"key_file": str(key_file)})
    settings.signer.private_key = None
    report = run_audit(scenario.context(settings), select(["keys"]))
    assert statuses(report)["KEY-002"] == "fail"  # 33-byte form of the default key
    assert statuses(report)["KEY-001"] == "fail"  # 0640 key file
    key_file.write_text("not-a-key")
    report = run_audit(scenario.context(settings), select(["keys"]))
    found = by_id(report)
    assert found["KEY-002"].status.value == "error"
    assert "not 64 or 66 hex" in found["KEY-002"].detail
    assert "not-a-key" not in found["KEY-002"].detail


def firewall_context(
    tmp_path: Path, outputs: dict[str, str | CommandResult], **audit: object
) -> HostContext:
    from sbtc_ops.config import Settings

    settings = Settings.model_validate(
        {
            "signer": {"listen_on": ["tcp://0.0.0.0:4122"]},
            "audit": {
                "compose_files": [
                    str(FIXTURES / "weak/root/opt/sbtc/nodes/docker-compose.chains.yml")
                ],
                **audit,
            },
        }
    )
    return HostContext(settings, root=Path("/"), runner=RecordedRunner(outputs), now=FIXTURE_NOW)


def fw_statuses(ctx: HostContext) -> dict[str, str]:
    report = run_audit(ctx, [c for c in select(["firewall"]) if c.id != "FW-005"])
    return statuses(report)


def test_legacy_iptables_with_docker_user(tmp_path: Path) -> None:
    fixtures = FIXTURES / "firewall"
    outputs: dict[str, str | CommandResult] = {
        "iptables-save": (fixtures / "iptables-save.txt").read_text(),
        "ip6tables-save": (fixtures / "ip6tables-save.txt").read_text(),
        "sshd -T": (FIXTURES / "hardened/cmd/sshd-T.txt").read_text(),
    }
    ctx = firewall_context(tmp_path, outputs, allow_node_p2p=True)
    report = run_audit(ctx, [c for c in select(["firewall"]) if c.id != "FW-005"])
    found = by_id(report)
    assert statuses(report) == {
        "FW-001": "pass",
        "FW-002": "warn",  # ip6tables INPUT ACCEPT
        "FW-003": "fail",  # 5432 open to anywhere via the signer-input chain
        "FW-004": "fail",  # 8332/20443 dropped in DOCKER-USER, ZMQ 28332 is not
        "FW-006": "fail",
    }
    assert found["FW-001"].data["backend"] == "iptables"
    assert "5432/tcp (PostgreSQL)" in found["FW-003"].detail
    assert "9184" not in found["FW-003"].detail  # source-restricted
    published = " ".join(i["published"] for i in found["FW-004"].data["items"])
    assert ":28332->" in published and ":9153->" in published and ":8334->" in published
    assert ":8332->" not in published and ":20443->" not in published


def test_nft_ip_family_only_and_ct_proto_dst_docker_user(tmp_path: Path) -> None:
    """Real `nft -j` output: an ip-family input chain ending in reject, and DOCKER-USER
    matching `ct original proto-dst`, which nft 1.0.6 prints as '0x208c [invalid type]'."""
    outputs: dict[str, str | CommandResult] = {
        "nft -j list ruleset": (FIXTURES / "firewall/nft-v4only-docker-user.json").read_text()
    }
    found = by_id(run_audit(firewall_context(tmp_path, outputs), select(["firewall"])))
    assert found["FW-001"].status.value == "pass"  # terminal reject
    assert found["FW-002"].status.value == "warn"  # ip family: IPv6 uncovered
    assert found["FW-003"].status.value == "fail"  # 8801 accepted from anywhere
    assert "8801/tcp (signer event observer)" in found["FW-003"].detail
    published = " ".join(i["published"] for i in found["FW-004"].data["items"])
    assert ":8332->" not in published and ":20443->" not in published
    assert ":28332->" in published
    # ssh port came from the default (22): sshd not recorded here
    assert found["FW-005"].status.value == "skip"


def test_ufw_live_and_config_files(tmp_path: Path) -> None:
    fixtures = FIXTURES / "firewall"
    outputs: dict[str, str | CommandResult] = {
        "ufw status verbose": (fixtures / "ufw-status-verbose.txt").read_text()
    }
    assert fw_statuses(firewall_context(tmp_path, outputs)) == {
        "FW-001": "pass",
        "FW-002": "pass",
        "FW-003": "warn",  # 20443 from anywhere
        "FW-004": "fail",
        "FW-006": "fail",
    }
    # Auditing a tree: ufw's config files are the evidence.
    from sbtc_ops.config import Settings

    ctx = HostContext(Settings(), root=fixtures / "ufw-root", now=FIXTURE_NOW)
    found = by_id(run_audit(ctx, select(["firewall"])))
    assert found["FW-001"].status.value == "pass"
    assert found["FW-001"].data["backend"] == "ufw (config files)"
    assert found["FW-005"].status.value == "skip"
    assert "not run when auditing a directory tree" in found["FW-005"].detail


def test_ipv6_gap_matters_only_with_a_global_ipv6_address(tmp_path: Path) -> None:
    ruleset = (FIXTURES / "firewall/nft-v4only-docker-user.json").read_text()
    link_local_only = (
        '[{"ifname":"lo","addr_info":[{"family":"inet6","local":"::1","scope":"host"}]},'
        '{"ifname":"eth0","addr_info":[{"family":"inet","local":"10.0.0.5","scope":"global"},'
        '{"family":"inet6","local":"fe80::1","scope":"link"}]}]'
    )
    with_global = link_local_only.replace(
        '"fe80::1","scope":"link"', '"2001:db8::5","scope":"global"'
    )
    for addresses, expected in ((link_local_only, "pass"), (with_global, "warn")):
        outputs: dict[str, str | CommandResult] = {
            "nft -j list ruleset": ruleset,
            "ip -j addr show": addresses,
        }
        found = by_id(run_audit(firewall_context(tmp_path, outputs), select(["firewall"])))
        assert found["FW-002"].status.value == expected
    assert "2001:db8::5" in found["FW-002"].detail


def test_docker_user_rules_nft_cannot_translate_are_not_credited(tmp_path: Path) -> None:
    """iptables-nft rules with matches nft cannot express show up as `xt` expressions; such a
    DROP must not be read as 'drops every port'."""
    doc = json.loads((FIXTURES / "firewall/nft-v4only-docker-user.json").read_text())
    for item in doc["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == "DOCKER-USER" and {"drop": None} in rule["expr"]:
            rule["expr"] = [
                {"xt": {"type": "match", "name": "conntrack"}},
                {"counter": {"packets": 0, "bytes": 0}},
                {"drop": None},
            ]
    outputs: dict[str, str | CommandResult] = {"nft -j list ruleset": json.dumps(doc)}
    found = by_id(run_audit(firewall_context(tmp_path, outputs), select(["firewall"])))
    published = " ".join(i["published"] for i in found["FW-004"].data["items"])
    assert ":8332->" in published and ":20443->" in published


_NFT_ACCEPT_POLICY = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "filter", "handle": 1}},
        {
            "chain": {
                "family": "inet",
                "table": "filter",
                "name": "input",
                "handle": 1,
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": "accept",
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "filter",
                "chain": "input",
                "handle": 2,
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "right": 22,
                        }
                    },
                    {"accept": None},
                ],
            }
        },
    ]
}


@pytest.mark.parametrize(
    "ruleset",
    [
        {"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]},
        _NFT_ACCEPT_POLICY,
    ],
    ids=["no-rules-at-all", "accept-policy-with-an-ssh-rule"],
)
def test_no_filtering_cannot_pass_the_allowed_set_check(tmp_path: Path, ruleset: object) -> None:
    """With nothing dropped by default, accepting only allowed ports restricts nothing: FW-003
    must fail beside FW-001, never pass with "accepted inbound: nothing"."""
    outputs: dict[str, str | CommandResult] = {"nft -j list ruleset": json.dumps(ruleset)}
    found = by_id(run_audit(firewall_context(tmp_path, outputs), select(["firewall"])))
    assert found["FW-001"].status.value == "fail"
    assert found["FW-003"].status.value == "fail", found["FW-003"].detail
    assert "no default deny" in found["FW-003"].detail
    assert "every listening port is open" in found["FW-003"].detail
