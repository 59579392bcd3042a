"""The Docker lab for the `docker` tests: a real dockerd and a reference-shaped deployment.

`docker_lab` (session) runs tests/lab/lab.sh (install, base, start, image, up), fills the lab's
PostgreSQL container with a generated signer database, and on teardown stops everything and
asserts that no container, network, mount, link, firewall table or sysctl change is left.
It skips, with the reason, where Docker cannot run (not root, no dockerd and no apt-get, or a
dockerd that does not start); a lab that starts but does not come up fails the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sbtc_ops.clarity import Buffer, List, Tuple, UInt, principal_from_text
from sbtc_ops.devtools.signer_db import GeneratedDb, generate

LAB_SCRIPT = Path(__file__).resolve().parents[1] / "lab" / "lab.sh"
LAB_RUN = Path("/run/sbtc-ops-lab")
LAB_CACHE = Path(os.environ.get("LAB_CACHE", "/var/cache/sbtc-ops-lab"))
SOCKET = LAB_RUN / "docker.sock"
DOCKER_HOST = f"unix://{SOCKET}"
DB_PASSWORD = "postgres"  # planted: PostgreSQL's default, as the weak reference setups use
DOCKER_LINK = re.compile(r"^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7})$")
DOCKER_CLI = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


@dataclass
class DockerLab:
    project_dir: Path
    project_name: str
    signer_private_key: bytes
    db: GeneratedDb | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a client of the lab's engine needs (sbtc-ops finds it through DOCKER_HOST)."""
        return {"DOCKER_HOST": DOCKER_HOST}

    def docker(self, *args: str, input_text: str | None = None) -> str:
        done = subprocess.run(
            [DOCKER_CLI, *args],
            env={**os.environ, **self.env},
            input=input_text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def inspect(self, name: str) -> dict[str, Any]:
        doc: list[dict[str, Any]] = json.loads(self.docker("inspect", name))
        return doc[0]

    def container_ip(self, name: str) -> str:
        networks = self.inspect(name)["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def psql(self, query: str) -> str:
        """Run SQL inside the postgres container (local trust auth, no password needed)."""
        return self.docker(
            "exec", "-u", "postgres", "postgres", "psql", "-XAtq", "-d", "signer", "-c", query
        ).strip()


def lab_step(*steps: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run steps of tests/lab/lab.sh (see its header)."""
    return _lab(*steps, env=env)


def _lab(*steps: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LAB_SCRIPT), *steps],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def _why_docker_cannot_run() -> str | None:
    if os.environ.get("SBTC_OPS_DOCKER_LAB", "").lower() in ("0", "off", "no"):
        return "the Docker lab is switched off (SBTC_OPS_DOCKER_LAB=off)"
    if os.geteuid() != 0:
        return "the Docker lab needs root (it starts its own dockerd)"
    if not shutil.which("dockerd") and not shutil.which("apt-get"):
        return "no dockerd and no apt-get to install docker.io"
    return None


def host_state() -> dict[str, Any]:
    """What the lab may change on the host, to compare before and after."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    return {
        # Docker's link names only: other tests (network namespaces) add and remove veth
        # pairs of their own on the host while this session runs.
        "links": sorted(
            name
            for line in links.splitlines()
            if ": " in line and DOCKER_LINK.match(name := line.split(": ")[1].split("@")[0])
        ),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "nft_tables": nft.stdout if nft.returncode == 0 else None,
        "mounts": sorted(
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if "sbtc-ops-lab" in line
        ),
    }


def assert_lab_gone(before: dict[str, Any]) -> None:
    after = host_state()
    assert after == before, f"the Docker lab left host changes: before {before}, after {after}"
    assert not SOCKET.exists() and not LAB_RUN.exists(), f"{LAB_RUN} left behind"
    left = [p for p in Path("/var/tmp").glob("sbtc-ops-lab*")]
    assert not left, f"lab directories left: {left}"
    procs = subprocess.run(["pgrep", "-f", f"dockerd --host {DOCKER_HOST}"], capture_output=True)
    assert procs.returncode == 1, "the lab's dockerd is still running"


def _start(key: bytes) -> DockerLab:
    env = {"LAB_SIGNER_PRIVATE_KEY": key.hex(), "LAB_POSTGRES_PASSWORD": DB_PASSWORD}
    for steps in (("install", "base"), ("start",)):
        done = _lab(*steps, env=env)
        if done.returncode != 0:
            _lab("stop")
            pytest.skip(f"Docker cannot run here ({' '.join(steps)}): {done.stderr[-600:]}")
    done = _lab("image", "up", env=env)
    if done.returncode != 0:
        _lab("stop")
        pytest.fail(f"the Docker lab did not come up: {done.stderr[-2000:]}")
    values = dict(line.split("=", 1) for line in _lab("env").stdout.splitlines() if "=" in line)
    return DockerLab(Path(values["LAB_PROJECT"]), values["LAB_PROJECT_NAME"], key)


def _registry_answers(db: GeneratedDb) -> dict[str, str]:
    """What the lab's Stacks stand-in answers for sbtc-registry: the DB's newest verified key
    and its signer set, as the chain would after that DKG round."""
    key = db.newest_verified
    values = {
        "get-current-aggregate-pubkey": Buffer(key.aggregate_key),
        "get-current-signer-set": List(tuple(Buffer(k) for k in key.signer_set_public_keys)),
        "get-current-signature-threshold": UInt(key.threshold),
        "get-current-signer-principal": principal_from_text(db.deployer),
    }
    data = Tuple({name.removeprefix("get-"): value for name, value in values.items()})
    answers = {name: value.to_hex() for name, value in values.items()}
    answers["get-current-signer-data"] = data.to_hex()
    return answers


def _fill_database(lab: DockerLab) -> None:
    ip = lab.container_ip("postgres")
    url = f"postgresql://postgres:{DB_PASSWORD}@{ip}:5432/signer"
    deadline = time.monotonic() + 60
    while True:
        try:
            lab.db = generate(url, target_mb=2, seed=15, signer_private_key=lab.signer_private_key)
            break
        except psycopg.OperationalError:  # healthy on its socket before TCP is up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    registry = lab.project_dir / "nodes" / "stacks" / "registry.json"
    registry.write_text(json.dumps(_registry_answers(lab.db)))


def _record_timings(lab: DockerLab, stop_log: str) -> None:
    """Setup and stop times, kept beside the lab's cache for whoever tunes the suite."""
    cache = LAB_CACHE
    if not cache.is_dir():
        return
    stop = [line for line in stop_log.splitlines() if line.startswith("[lab ")]
    with (cache / "timings.log").open("a") as log:
        log.write(f"{time.strftime('%FT%T')} setup {lab.facts.get('setup_s')} s; {stop}\n")


@contextlib.contextmanager
def _one_lab_at_a_time() -> Iterator[None]:
    """One lab per machine (fixed socket, ports 9184/8801): a second test session waits."""
    LAB_CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(LAB_CACHE, os.O_RDONLY)  # flock on the cache directory: nothing to clean up
    try:
        deadline = time.monotonic() + 1200
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another test session held the Docker lab for 20 minutes")
                time.sleep(1)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def docker_lab() -> Iterator[DockerLab]:
    reason = _why_docker_cannot_run()
    if reason:
        pytest.skip(reason)
    with _one_lab_at_a_time():
        yield from _run_lab()


def _run_lab() -> Iterator[DockerLab]:
    before = host_state()
    t0 = time.monotonic()
    lab = _start(secrets.token_bytes(32))
    try:
        _fill_database(lab)
        lab.facts["setup_s"] = round(time.monotonic() - t0, 1)
        yield lab
    finally:
        stopped = _lab("stop")
        _record_timings(lab, stopped.stderr)
        assert stopped.returncode == 0, f"lab.sh stop failed: {stopped.stderr[-2000:]}"
        assert_lab_gone(before)
