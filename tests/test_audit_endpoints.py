"""CFG-008: the signer's endpoints as its container sees them. The reference compose file
(the hardened fixture's) under --root, with its .env's hosts changed: 127.0.0.1/localhost
inside a bridge-network container is the container itself, not the host's nodes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sbtc_ops.audit.framework import Finding
from sbtc_ops.host.endpoints import container_view, endpoints_of, is_loopback, public_url
from tests.support.audit import FIXTURES
from tests.support.audit2 import make_settings, run_area, write

REFERENCE = FIXTURES / "hardened" / "root" / "opt" / "sbtc"
COMPOSE = "/opt/sbtc/docker-compose.yml"
SECRETS = ("Zq3vN8rT1xW6yL0pB5mK2cH7fJ4dS9gA", "hT6wQ1nV8zX3cR5bM0kL7jF2pD9sG4aY")


def _deployment(tmp_path: Path, env: dict[str, str], *, network_mode: str | None = None) -> Path:
    """The reference compose and .env under tmp_path/root, `env` overriding .env lines."""
    root = tmp_path / "root"
    project = root / "opt" / "sbtc"
    project.mkdir(parents=True)
    compose = (REFERENCE / "docker-compose.yml").read_text()
    if network_mode is not None:
        marker = "    container_name: sbtc-signer\n"
        compose = compose.replace(marker, f"{marker}    network_mode: {network_mode}\n")
    (project / "docker-compose.yml").write_text(compose)
    lines = dict(
        line.split("=", 1) for line in (REFERENCE / ".env").read_text().splitlines() if "=" in line
    )
    lines.update(env)
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return root


def _cfg_008(tmp_path: Path, root: Path, **signer: str) -> Finding:
    settings = make_settings(
        tmp_path,
        docker={"compose_files": [COMPOSE]},
        audit={"signer_version": "1.3.0"},
        signer=signer,
    )
    return run_area("signer-config", settings, root=root)["CFG-008"]


def _assert_no_secret(finding: Finding) -> None:
    shown = f"{finding.detail} {finding.data}"
    assert not any(secret in shown for secret in SECRETS), shown


def test_the_reference_compose_with_a_loopback_stacks_host_fails(tmp_path: Path) -> None:
    root = _deployment(tmp_path, {"STACKS_RPC_HOST": "127.0.0.1"})
    finding = _cfg_008(tmp_path, root)
    assert finding.status.value == "fail", finding.detail
    assert "SIGNER_STACKS__ENDPOINTS=http://127.0.0.1:20443" in finding.detail
    assert "container sbtc-signer (bridge network)" in finding.detail
    assert "BITCOIN" not in finding.detail and "DB_ENDPOINT" not in finding.detail
    _assert_no_secret(finding)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"POSTGRES_HOST": "localhost"}, "SIGNER_SIGNER__DB_ENDPOINT"),
        ({"BITCOIN_RPC_HOST": "127.0.0.53"}, "SIGNER_BITCOIN__RPC_ENDPOINTS"),
        ({"BITCOIN_RPC_HOST": "[::1]"}, "SIGNER_BITCOIN__RPC_ENDPOINTS"),
    ],
)
def test_every_signer_endpoint_on_loopback_is_named_without_its_credentials(
    tmp_path: Path, env: dict[str, str], setting: str
) -> None:
    finding = _cfg_008(tmp_path, _deployment(tmp_path, env))
    assert finding.status.value == "fail", finding.detail
    assert setting in finding.detail
    assert [setting in item for item in finding.data["loopback_in_container"]] == [True]
    _assert_no_secret(finding)


def test_a_container_sharing_another_containers_network_still_reaches_itself(
    tmp_path: Path,
) -> None:
    root = _deployment(tmp_path, {"STACKS_RPC_HOST": "localhost"}, network_mode="service:vpn")
    finding = _cfg_008(tmp_path, root)
    assert finding.status.value == "fail", finding.detail
    assert finding.data["network_mode"] == "service:vpn"


def test_host_network_mode_reaches_the_hosts_nodes(tmp_path: Path) -> None:
    root = _deployment(tmp_path, {"STACKS_RPC_HOST": "127.0.0.1"}, network_mode="host")
    finding = _cfg_008(tmp_path, root)
    assert finding.status.value == "pass", finding.detail
    assert finding.data["network_mode"] == "host"


def test_service_names_pass(tmp_path: Path) -> None:
    finding = _cfg_008(tmp_path, _deployment(tmp_path, {}))
    assert finding.status.value == "pass", finding.detail
    assert "stacks-blockchain" in finding.detail and "postgres" in finding.detail
    assert len(finding.data["endpoints"]) == 3
    _assert_no_secret(finding)


def test_a_signer_run_on_the_host_reaches_the_host_on_loopback(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = write(root, "/etc/sbtc/signer.env", "SIGNER_STACKS__ENDPOINTS=http://127.0.0.1:20443\n")
    settings = make_settings(tmp_path, signer={"env_file": str(env)})
    finding = run_area("signer-config", settings, root=root)["CFG-008"]
    assert finding.status.value == "pass", finding.detail
    assert finding.data["seen_from"] == "the host"


def test_without_the_signers_configuration_the_check_is_skipped(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
    (tmp_path / "root").mkdir()
    finding = run_area("signer-config", make_settings(tmp_path), root=tmp_path / "root")["CFG-008"]
    assert finding.status.value == "skip", finding.detail


def test_endpoint_parsing_is_bounded_to_what_the_url_names() -> None:
    view = container_view("sbtc-signer", None)
    found = endpoints_of("SIGNER_STACKS__ENDPOINTS", "http://127.0.0.1:1, ,localhost:2,::", view)
    assert [(e.host, e.reaches_itself) for e in found] == [("127.0.0.1", True), ("localhost", True)]
    assert not is_loopback("127example.com") and is_loopback("LOCALHOST")
    assert public_url("https://u:pw@node.example:20443/v2/?key=abc#x") == (
        "https://node.example:20443/v2"
    )
    assert public_url("http://[::1:8332") == "(invalid URL)"
