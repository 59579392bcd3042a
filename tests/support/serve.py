"""Run a real `sbtc-ops serve` process for tests, on a free loopback port, always stopped."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sbtc_ops.serve.http import StatusServer
from sbtc_ops.state import Run, StateStore
from tests.support.cli import clean_env, sbtc_ops_executable

# Every job disabled: a test enables what it needs.
NO_JOBS = {
    "backup_cron": "",
    "verify_rotate_cron": "",
    "audit_cron": "",
    "chain_check_cron": "",
    "signer_check_cron": "",
    "jitter_s": 0,
    "dkg_watch": False,
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]], **top: Any) -> Path:
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """`sbtc-ops --config CONFIG serve --bind 127.0.0.1:0`, its stderr collected."""

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.args = args
        self.state_dir = state_dir
        self.env = clean_env(state_dir, env)
        self.stderr: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._reader: threading.Thread | None = None

    def start(self, timeout_s: float = 20.0) -> Daemon:
        self.proc = subprocess.Popen(
            [
                sbtc_ops_executable(),
                "--config",
                str(self.config),
                "serve",
                "--bind",
                "127.0.0.1:0",
                *self.args,
            ],
            cwd=self.config.parent,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self._listening() is not None, timeout_s, self.describe)
        self.port = self._listening() or 0
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _listening(self) -> int | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"serve exited early: {self.describe()}")
        for line in list(self.stderr):
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if match:
                return int(match.group(1))
        return None

    def describe(self) -> str:
        code = self.proc.poll() if self.proc else None
        return f"exit={code} stderr={''.join(self.stderr)[-3000:]!r}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:  # noqa: S310
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def runs(self, job: str | None = None) -> list[Run]:
        with StateStore.open(self.state_dir) as store:
            return store.runs(job)


@contextmanager
def running_daemon(
    config: Path, state_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[Daemon]:
    daemon = Daemon(config, state_dir, env, args).start()
    try:
        yield daemon
    finally:
        daemon.kill()


def wait_until(
    condition: Callable[[], Any], timeout_s: float, describe: Callable[[], str] = lambda: ""
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; {describe()}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_with(fragment: str) -> list[int]:
    """Live processes whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


# -- recorded state for tests that need no real job ---------------------------------------

NOW = 1_790_000_000.0
KEY_A = "02" + "aa" * 32
KEY_B = "03" + "bb" * 32


def record_run(store: StateStore, job: str, outcome: str, at: float, **data: Any) -> None:
    run = store.start_run(job, at=at)
    store.finish_run(run, outcome, {"summary": f"{job} {outcome}", **data}, at=at + 5)


def populate(
    state_dir: Path, *, verify_outcome: str = "ok", chain_key: str = KEY_A, now: float = NOW
) -> None:
    """A week of daily backups and verifies, a chain check and an audit."""
    with StateStore.open(state_dir) as store:
        for day in range(7):
            at = now - (7 - day) * 86400 + 3600
            backup_id = f"20260101T0{day}0000Z"
            store.record_event(
                "backup",
                backup_id,
                "ok",
                {
                    "kind": "full",
                    "size": 1_000_000 + day * 50_000,
                    "duration_s": 10.0 + day,
                    "newest_verified_aggregate_key": KEY_A,
                },
                at=at,
            )
            record_run(store, "backup", "ok", at - 20)
            verdict = "match" if day < 6 or verify_outcome == "ok" else verify_outcome
            store.record_event(
                "verify",
                backup_id,
                "ok" if verdict == "match" else verdict,
                {
                    "verdict": verdict,
                    "db_aggregate_key": KEY_A,
                    "onchain_aggregate_key": KEY_A,
                    "failed_checks": [] if verdict == "match" else ["dkg.matches_chain"],
                    "duration_s": 30.0,
                },
                at=at + 60,
            )
            record_run(store, "verify", "ok" if verdict == "match" else "problem", at + 10)
        record_run(
            store,
            "chain-check",
            "problem",
            now - 300,
            endpoints=[
                {"endpoint": "http://stacks-node:20443", "up": True},
                {"endpoint": "https://api.hiro.so", "up": False},
            ],
            onchain_aggregate_key=chain_key,
        )
        findings = [
            {"id": "ACC-001", "area": "access", "title": "Root login", "severity": "critical",
             "status": "fail", "detail": "PermitRootLogin yes <script>", "remediation": "set no"},
            {"id": "FW-002", "area": "firewall", "title": "Policy", "severity": "high",
             "status": "warn", "detail": "input policy accept", "remediation": None},
        ]  # fmt: skip
        store.record_event("audit", "host", "ok", {"score": 71, "findings": findings}, at=now - 600)
        record_run(store, "audit", "problem", now - 620, score=71)


def signer_config(root: Path, db_url: str, stacks_url: str, **serve: Any) -> Path:
    """sbtc-ops.toml for a real signer database, a local backup repository under `root`
    and one Stacks endpoint; every job off except those given in `serve`."""
    return write_config(
        root / "sbtc-ops.toml",
        {
            "db": {"url": db_url},
            "backup": {"local_dir": str(root / "repo")},
            "stacks": {"endpoints": [stacks_url], "retries": 0},
            "serve": {**NO_JOBS, **serve},
        },
    )


class WebhookSink:
    """A local HTTP server recording webhook POSTs; answers from a script of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                sink.bodies.append((self.path, json.loads(self.rfile.read(length))))
                status = sink.statuses.pop(0) if sink.statuses else 204
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def start_status_server(state_dir: Path, **options: Any) -> tuple[StatusServer, int]:
    """The daemon's HTTP side alone, healthy and ready, on a free loopback port over a
    populated state directory: (server, port). The caller stops it."""
    populate(state_dir)
    server = StatusServer(
        "127.0.0.1:0",
        state_dir,
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ready"),
        **options,
    )
    _, port = server.start()
    return server, port


def http_get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    """GET `path` from 127.0.0.1:`port` on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
