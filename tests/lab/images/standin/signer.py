#!/usr/bin/env python3
"""Stand-in for the sBTC signer: /metrics on the prometheus_exporter_endpoint port and /info
(plus GET / and POST /new_block) on the event observer port, read from /signer-config.toml and
SIGNER_* variables as the real signer does. /info's DKG fields come from the signer DB (psql)."""

import json
import os
import subprocess
import sys
import threading
import tomllib
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

BUCKETS = ("0.0001", "0.001", "0.01", "0.1", "0.5", "1", "5", "20", "+Inf")


def config() -> dict:
    path = (
        sys.argv[sys.argv.index("--config") + 1]
        if "--config" in sys.argv
        else "/signer-config.toml"
    )
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    for name, value in os.environ.items():
        if name.startswith("SIGNER_"):
            keys = name[len("SIGNER_") :].lower().split("__")
            node = doc
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
    return doc


CONFIG = config()
SIGNER = CONFIG.get("signer", {})


def metrics() -> str:
    lines = []

    def add(name: str, kind: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            sep = "," if labels else ""
            lines.append(f'{name}{{app="signer"{sep}{labels}}} {value}')

    add(
        "blocks_observed_total",
        "counter",
        [('blockchain="bitcoin"', 12), ('blockchain="stacks"', 240)],
    )
    add("deposit_requests_total", "counter", [('blockchain="bitcoin",status="success"', 3)])
    add("deposits_swept_total", "counter", [('blockchain="bitcoin"', 2)])
    add(
        "transactions_submitted_total",
        "counter",
        [('blockchain="stacks",status="success",kind="complete-deposit"', 2)],
    )
    add(
        "signing_rounds_completed_total",
        "counter",
        [('blockchain="bitcoin",kind="sweep",status="success"', 2)],
    )
    add("coordinator_tenures_total", "counter", [("", 1)])
    add(
        "sign_requests_total",
        "counter",
        [('blockchain="bitcoin",kind="sweep",status="success"', 4)],
    )
    add("peers_connected", "gauge", [("", 14)])
    add(
        "call_read_only_requests_total",
        "counter",
        [
            (
                'contract_name="sbtc-registry",function_name="get-current-aggregate-pubkey",status_code="200",blockchain="stacks"',
                5,
            )
        ],
    )
    base = 'blockchain="bitcoin",kind="sweep",status="success"'
    lines.append("# TYPE signing_round_duration_seconds histogram")
    for le in BUCKETS:
        lines.append(
            f'signing_round_duration_seconds_bucket{{app="signer",{base},le="{le}"}} {0 if le in BUCKETS[:4] else 2}'
        )
    lines.append(f'signing_round_duration_seconds_sum{{app="signer",{base}}} 1.5')
    lines.append(f'signing_round_duration_seconds_count{{app="signer",{base}}} 2')
    add(
        "build_info",
        "gauge",
        [('rust_version="1.84.0",revision="",arch="x86_64",env_abi="gnu"', 1)],
    )
    return "\n".join(lines) + "\n"


def psql(query: str) -> str | None:
    url = urllib.parse.urlsplit(SIGNER.get("db_endpoint", ""))
    env = dict(
        os.environ, PGPASSWORD=urllib.parse.unquote(url.password or ""), PGCONNECT_TIMEOUT="3"
    )
    args = [
        "psql",
        "-XAtq",
        "-h",
        url.hostname or "postgres",
        "-p",
        str(url.port or 5432),
        "-U",
        urllib.parse.unquote(url.username or "postgres"),
        "-d",
        url.path.lstrip("/") or "signer",
        "-c",
        query,
    ]
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout.strip()


def info() -> dict:
    rounds = psql("SELECT count(*) FROM sbtc_signer.dkg_shares WHERE dkg_shares_status <> 'failed'")
    key = psql(
        "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT 1"
    )
    keys = (
        "network",
        "deployer",
        "bootstrap_signatures_required",
        "bitcoin_processing_delay",
        "context_window",
        "signer_round_max_duration",
        "bitcoin_presign_request_max_duration",
        "dkg_max_duration",
        "sbtc_bitcoin_start_height",
        "dkg_begin_pause",
        "max_deposits_per_bitcoin_block",
        "dkg_min_bitcoin_block_height",
    )
    return {
        "bitcoin": {
            "signer_tip": None,
            "node_tip": None,
            "node_chain": None,
            "node_version": None,
            "node_subversion": None,
        },
        "stacks": {
            "signer_tip": None,
            "node_tip": None,
            "node_bitcoin_block_height": None,
            "node_version": None,
        },
        "dkg": {
            "rounds": int(rounds) if rounds and rounds.isdigit() else 0,
            "current_aggregate_key": key or None,
            "contract_aggregate_key": None,
        },
        "config": {k: SIGNER.get(k) for k in keys},
        "build_info": {
            "rust_version": "1.84.0",
            "git_revision": "",
            "target_arch": "x86_64",
            "target_env_abi": "gnu",
        },
        "timestamp": datetime.now(UTC).isoformat(),
    }


class Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        kind, body = route()
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(bind: str, routes: dict) -> ThreadingHTTPServer:
    host, _, port = bind.rpartition(":")
    handler = type("H", (Handler,), {"routes": routes})
    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    metrics_bind = SIGNER.get("prometheus_exporter_endpoint")
    if metrics_bind:
        serve(
            metrics_bind.replace("[::]", "0.0.0.0"),
            {"/metrics": lambda: ("text/plain; version=0.0.4", metrics())},
        )
    observer = SIGNER.get("event_observer", {}).get("bind", "0.0.0.0:8801")
    serve(
        observer,
        {
            "/info": lambda: ("application/json", json.dumps(info())),
            "/": lambda: ("text/plain", ""),
        },
    )
    print(
        json.dumps(
            {
                "level": "INFO",
                "message": "signer stand-in started",
                "metrics": metrics_bind,
                "event_observer": observer,
            }
        ),
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
