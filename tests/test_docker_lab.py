"""The Docker lab itself: a real engine running the reference-shaped deployment."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.support.docker_lab import DockerLab, host_state

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def test_signer_stand_in_serves_metrics_on_every_interface(docker_lab: DockerLab) -> None:
    body = httpx.get("http://127.0.0.1:9184/metrics", timeout=5).text
    assert 'blocks_observed_total{app="signer",blockchain="bitcoin"}' in body
    assert "build_info{" in body
    ports = docker_lab.inspect("sbtc-signer")["NetworkSettings"]["Ports"]
    assert {"HostIp": "0.0.0.0", "HostPort": "9184"} in ports["9184/tcp"]
    assert ports["8801/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "8801"}]


def test_info_reports_the_generated_dkg_state(docker_lab: DockerLab) -> None:
    assert docker_lab.db is not None
    info = httpx.get("http://127.0.0.1:8801/info", timeout=10).json()
    # Other tests may add DKG rounds: /info must follow the DB, newest row first.
    newest = docker_lab.psql(
        "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares "
        "ORDER BY created_at DESC LIMIT 1"
    )
    assert info["dkg"]["current_aggregate_key"] == newest
    rounds = docker_lab.psql(
        "SELECT count(*) FROM sbtc_signer.dkg_shares WHERE dkg_shares_status <> 'failed'"
    )
    assert info["dkg"]["rounds"] == int(rounds) >= 4
    assert info["config"]["network"] == "mainnet"


def test_postgres_is_not_published_and_holds_the_signer_db(docker_lab: DockerLab) -> None:
    assert docker_lab.db is not None
    assert docker_lab.inspect("postgres")["NetworkSettings"]["Ports"] == {}
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    assert ":5432 " not in listening.replace("\n", " ") or "127.0.0.1:5432" not in listening
    key = docker_lab.db.newest_verified_key.hex()
    found = docker_lab.psql(
        f"SELECT dkg_shares_status FROM sbtc_signer.dkg_shares "
        f"WHERE aggregate_key = decode('{key}', 'hex')"
    )
    assert found == "verified"
    version = docker_lab.psql("SHOW server_version")
    assert version.startswith("15.")


def test_compose_labels_name_the_project_files(docker_lab: DockerLab) -> None:
    labels = docker_lab.inspect("sbtc-signer")["Config"]["Labels"]
    assert labels["com.docker.compose.project.working_dir"] == str(docker_lab.project_dir)
    # compose v1 writes the files relative to the working dir, v2 absolute: both resolve.
    files = labels["com.docker.compose.project.config_files"].split(",")
    assert [docker_lab.project_dir / f for f in files] == [
        docker_lab.project_dir / "docker-compose.yml",
        docker_lab.project_dir / "nodes" / "docker-compose.chains.yml",
    ]
    env_mode = (docker_lab.project_dir / ".env").stat().st_mode & 0o777
    assert env_mode == 0o644
    networks = docker_lab.docker("network", "ls", "--format", "{{json .Name}}").split()
    assert f"{docker_lab.project_name}_default" in [json.loads(n) for n in networks]
    # The teardown's leftover check watches these names: they exist while the lab runs.
    assert any(link.startswith("br-") for link in host_state()["links"])
    assert any(link.startswith("veth") for link in host_state()["links"])
