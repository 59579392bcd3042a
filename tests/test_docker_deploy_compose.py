"""deploy/compose as shipped: sbtc-ops as a service of the signer's compose project (the
override file joins the project's network), built from this checkout, runs `serve` and
answers /metrics on the compose network."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.docker_lab import DOCKER_CLI, DOCKER_HOST, DockerLab, lab_step
from tests.support.serve import NO_JOBS, wait_until, write_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

OVERRIDE = (
    Path(__file__).resolve().parents[1] / "deploy" / "compose" / "docker-compose.sbtc-ops.yml"
)
IMAGE = "sbtc-ops-lab/sbtc-ops:test"


def compose(lab: DockerLab, *args: str) -> subprocess.CompletedProcess[str]:
    files = ["docker-compose.yml", "nodes/docker-compose.chains.yml", str(OVERRIDE)]
    argv = [DOCKER_CLI, "compose", "-p", lab.project_name]
    argv += [arg for f in files for arg in ("-f", f)]
    return subprocess.run(
        [*argv, *args],
        cwd=lab.project_dir,
        env={**os.environ, "DOCKER_HOST": DOCKER_HOST, "SBTC_OPS_IMAGE": IMAGE},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def sbtc_ops_service(docker_lab: DockerLab) -> Iterator[str]:
    """The sbtc-ops service up (image built by lab.sh ops-image); its container's address."""
    built = lab_step("ops-image", env={"LAB_PIP": f"{sys.executable} -m pip"})
    assert built.returncode == 0, f"lab.sh ops-image failed: {built.stderr[-2000:]}"
    config = write_config(
        docker_lab.project_dir / "sbtc-ops.toml",
        {"backup": {"local_dir": "/var/backups/sbtc-ops"}, "serve": NO_JOBS},
    )
    config.chmod(0o644)  # read by the service's uid 10001; holds no secret
    up = compose(docker_lab, "up", "-d", "--no-deps", "--no-build", "--pull", "never", "sbtc-ops")
    try:
        assert up.returncode == 0, up.stderr
        container = compose(docker_lab, "ps", "-q", "sbtc-ops").stdout.strip()
        yield docker_lab.container_ip(container)
    finally:
        down = compose(docker_lab, "rm", "--stop", "--force", "-v", "sbtc-ops")
        assert down.returncode == 0, down.stderr
        for volume in ("sbtc-ops-state", "sbtc-ops-backups"):
            docker_lab.docker("volume", "rm", "-f", f"{docker_lab.project_name}_{volume}")
        config.unlink()


def test_compose_deployed_sbtc_ops_serves_metrics(
    docker_lab: DockerLab, sbtc_ops_service: str
) -> None:
    url = f"http://{sbtc_ops_service}:9185/metrics"

    def scrape() -> str | None:
        try:
            response = httpx.get(url, timeout=5)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    body = wait_until(scrape, 60)
    assert "sbtc_ops_build_info{" in body
    assert "sbtc_ops_aggregate_key_match" in body
    inspect = docker_lab.inspect(f"{docker_lab.project_name}-sbtc-ops-1")
    assert inspect["Config"]["User"] == "10001:10001"
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert f"{docker_lab.project_name}_default" in inspect["NetworkSettings"]["Networks"]
    ports = inspect["NetworkSettings"]["Ports"]["9185/tcp"]
    assert ports == [{"HostIp": "127.0.0.1", "HostPort": "9185"}]
