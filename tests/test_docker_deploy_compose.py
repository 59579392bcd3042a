"""deploy/compose as shipped: sbtc-ops as a service of the signer's compose project (the
override file joins the project's network), built from this checkout, runs `serve` and
answers /metrics on the compose network; a `verify` inside the service runs its drill in the
sandbox the service has: the entrypoint (root with SETUID/SETGID only) maps the service's uid
10001 and the drill's own uid 10002 in a user namespace, and the drill's programs run as
10002 under bubblewrap (the shipped seccomp profile): no signer configuration, identity or
state in their mount namespace, no network. The service itself runs as 10001 without a
capability."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import communicate_sampling
from tests.support.docker_lab import DOCKER_CLI, DOCKER_HOST, DockerLab, lab_step
from tests.support.serve import NO_JOBS, wait_until, write_config
from tests.support.verify import take_backup

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

OVERRIDE = (
    Path(__file__).resolve().parents[1] / "deploy" / "compose" / "docker-compose.sbtc-ops.yml"
)
SECCOMP = OVERRIDE.parent / "sbtc-ops-seccomp.json"
SERVICE_UID = 10001
SANDBOX_UID = 10002
AS_SERVICE = ["-u", f"{SERVICE_UID}:{SERVICE_UID}"]  # as the compose file's comment says
READERS = {"postgres", "pg_restore", "psql", "pg_amcheck", "initdb", "gzip", "zstd"}
# What the drill's programs must not see, as the service itself does.
HIDDEN = [
    "/etc/signer/signer-config.toml",
    "/etc/sbtc-ops/sbtc-ops.toml",
    "/var/lib/sbtc-ops",
    "/var/backups/sbtc-ops",
    "/tmp/identity.txt",
]
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
    # The seccomp profile the override names, next to the project's compose file.
    shutil.copy(SECCOMP, docker_lab.project_dir / SECCOMP.name)
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
        (docker_lab.project_dir / SECCOMP.name).unlink()


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

    body = wait_until(scrape, 60, lambda: compose(docker_lab, "logs", "sbtc-ops").stdout[-3000:])
    assert "sbtc_ops_build_info{" in body
    assert "sbtc_ops_aggregate_key_match" in body
    inspect = docker_lab.inspect(f"{docker_lab.project_name}-sbtc-ops-1")
    # Root only to start: SETUID/SETGID, no other capability; sbtc-ops itself as 10001 with
    # none at all.
    assert inspect["Config"]["User"] == "0:0"
    assert sorted(inspect["HostConfig"]["CapAdd"]) == ["CAP_SETGID", "CAP_SETUID"]
    assert inspect["HostConfig"]["CapDrop"] == ["ALL"]
    serving = _service_processes(inspect["Id"])
    assert serving and all(uid == SERVICE_UID and caps == 0 for uid, caps in serving.values()), (
        serving
    )
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert f"{docker_lab.project_name}_default" in inspect["NetworkSettings"]["Networks"]
    ports = inspect["NetworkSettings"]["Ports"]["9185/tcp"]
    assert ports == [{"HostIp": "127.0.0.1", "HostPort": "9185"}]


def _service_processes(container_id: str) -> dict[int, tuple[int, int]]:
    """pid → (uid, effective capabilities) of the container's `sbtc-ops … serve` processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id not in (entry / "cgroup").read_text():
                continue
            if b"serve" not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            status = (entry / "status").read_text().splitlines()
            uid = int(next(x for x in status if x.startswith("Uid:")).split()[1])
            caps = int(next(x for x in status if x.startswith("CapEff:")).split()[1], 16)
        except (OSError, StopIteration, ValueError):
            continue
        found[int(entry.name)] = (uid, caps)
    return found


def _readers_in(container_id: str) -> list[tuple[int, str, int, list[str]]]:
    """(pid, program, uid, hidden paths it can see) of the archive readers in the container."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "exe").readlink().name
            if (entry / "cmdline").read_bytes().split(b"\0")[1:2] == [b"--version"]:
                continue  # find_binaries' version probe of a trusted binary: no archive
            if name not in READERS or container_id not in (entry / "cgroup").read_text():
                continue
            status = (entry / "status").read_text().splitlines()
            uid = int(next(x for x in status if x.startswith("Uid:")).split()[1])
            root = f"/proc/{entry.name}/root"
            seen = [p for p in HIDDEN if os.path.lexists(root + p)]
        except (OSError, StopIteration, ValueError):
            continue
        found.append((int(entry.name), name, uid, seen))
    return found


def test_compose_service_verify_runs_its_drill_in_a_sandbox(
    docker_lab: DockerLab, sbtc_ops_service: str, tmp_path: Path
) -> None:
    import pyrage

    assert docker_lab.db is not None
    container = f"{docker_lab.project_name}-sbtc-ops-1"
    container_id = docker_lab.inspect(container)["Id"]
    # A backup of the lab's signer database, taken from here, placed in the service's store.
    identity = pyrage.x25519.Identity.generate()
    url = f"postgresql://postgres:postgres@{docker_lab.container_ip('postgres')}:5432/signer"
    repo = tmp_path / "repo"
    backup_id, _ = take_backup(
        url, repo, tmp_path / "state", "--recipient", str(identity.to_public())
    )
    # As the service (a tar read in the container): its files, as a backup it took would be.
    packed = subprocess.run(
        ["tar", "-C", str(repo), "-c", backup_id], capture_output=True, check=True
    ).stdout
    unpack = [
        DOCKER_CLI,
        "exec",
        "-i",
        *AS_SERVICE,
        container,
        "tar",
        "-x",
        "-C",
        "/var/backups/sbtc-ops",
    ]
    subprocess.run(
        [*unpack, "--no-same-owner"],
        input=packed,
        env={**os.environ, "DOCKER_HOST": DOCKER_HOST},
        capture_output=True,
        check=True,
    )
    docker_lab.docker(
        "exec",
        "-i",
        *AS_SERVICE,
        container,
        "sh",
        "-c",
        "umask 077; cat > /tmp/identity.txt",
        input_text=str(identity) + "\n",
    )
    key = docker_lab.db.newest_verified_key.hex()
    # The service knows the live signer's schema (as its own backups record it): pinned once.
    pin = [
        DOCKER_CLI,
        "exec",
        *AS_SERVICE,
        "-e",
        "SBTC_OPS_DB__URL=postgresql://postgres:postgres@postgres:5432/signer",
    ]
    pin += [container, "sbtc-ops", "--config", "/etc/sbtc-ops/sbtc-ops.toml", "schema", "pin"]
    pinned = subprocess.run(
        [*pin, "--json"],
        env={**os.environ, "DOCKER_HOST": DOCKER_HOST},
        capture_output=True,
        text=True,
        check=False,
    )
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    # The lab's container filesystem is a small tmpfs: the drill's free-space reserve is sized
    # for a signer host's disk, not for it.
    argv = [DOCKER_CLI, "exec", *AS_SERVICE, "-e", "SBTC_OPS_VERIFY__DISK_RESERVE_MB=64"]
    argv += [container]
    argv += ["sbtc-ops", "--config", "/etc/sbtc-ops/sbtc-ops.toml"]
    argv += [
        "verify",
        backup_id,
        "--repo",
        "/var/backups/sbtc-ops",
        "--identity",
        "/tmp/identity.txt",
    ]
    argv += ["--expected-key", key, "--json"]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "DOCKER_HOST": DOCKER_HOST},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[int, str, int, list[str]]] = []
    out, err = communicate_sampling(
        proc, lambda: samples.extend(_readers_in(container_id)), timeout=300, every_s=0.01
    )
    doc = json.loads(out)
    budget = next((c["detail"] for c in doc["checks"] if c["id"] == "drill.budget"), None)
    assert proc.returncode == 0 and doc["verdict"] == "match", (doc["summary"], budget, err)
    layers = doc["sandbox"]
    assert layers["mode"] == "bwrap-sandbox-user", (layers, err)
    assert layers["mount_view"] and layers["no_network"] and layers["pid_namespace"]
    assert layers["separate_uid"] is True and layers["full"] is True and layers["missing"] == []
    assert "warning: the restore drill's sandbox" not in err
    assert "postgres" in {name for _, name, _, _ in samples}, "no archive reader was sampled"
    for pid, name, uid, seen in samples:
        assert not seen, f"{name} (pid {pid}) sees {seen}"
        assert uid == SANDBOX_UID, f"{name} (pid {pid}) runs as {uid}"
