"""Benchmarks of `sbtc-ops serve` (issue 7):

1. a year of daily operation (default schedules: backup + verify daily, weekly rotating
   verify, hourly audit with realistic findings, chain check every 10 minutes), recorded and
   pruned exactly as the daemon does → size of the state database (target < 20 MB);
2. an idle daemon's resident memory, on that year of history (target ≤ 80 MB RSS);
3. /metrics latency under 50 concurrent keep-alive scrapers with wrk (target p99 ≤ 20 ms).

    /opt/sbtc-venv/bin/python bench/bench_serve.py [--duration 10] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sbtc_ops.config import Settings
from sbtc_ops.serve.jobs import AUDIT_EVENT_KEEP, job_specs
from sbtc_ops.state import StateStore

DAY = 86400.0


def finding(i: int) -> dict[str, object]:
    status = ("fail", "warn", "error")[i % 3]
    return {
        "id": f"ACC-{i:03d}",
        "area": ("access", "firewall", "secrets", "logs", "nodes")[i % 5],
        "title": f"Best-practice check number {i} of the audit catalogue",
        "severity": ("critical", "high", "medium", "low")[i % 4],
        "status": status,
        "detail": f"observed value {i} differs from the policy; see the evidence for details",
        "remediation": "change the configuration as described in the best-practice page, section X",
    }


def simulate_year(state_dir: Path, start: float) -> dict[str, float]:
    """What one year of `serve` with the default schedules writes, pruned as it prunes."""
    keep = {spec.name: spec.keep_days for spec in job_specs(Settings())}
    findings = [finding(i) for i in range(40)]
    endpoints = [
        {"endpoint": "http://stacks-node:20443", "up": True, "elapsed_s": 0.012, "error": None},
        {"endpoint": "https://api.hiro.so", "up": True, "elapsed_s": 0.18, "error": None},
    ]
    key = "03" + "ab" * 32
    started = time.perf_counter()
    with StateStore.open(state_dir) as store:

        def run(job: str, at: float, outcome: str, data: dict[str, object]) -> None:
            run_id = store.start_run(job, at=at)
            store.finish_run(run_id, outcome, data, at=at + 1)
            store.prune_runs(job, at - keep[job] * DAY)

        for day in range(365):
            base = start + day * DAY
            backup_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(base + 3 * 3600))
            size = 900_000_000 + day * 300_000
            store.record_event(
                "backup", backup_id, "ok",
                {"kind": "full", "size": size, "duration_s": 41.5, "locations": ["/b", "s3://b"],
                 "newest_verified_aggregate_key": key, "dkg_created_at": "2026-01-01T00:00:00Z"},
                at=base + 3 * 3600,
            )  # fmt: skip
            run("backup", base + 3 * 3600, "ok",
                {"summary": f"{backup_id}: {size} bytes in 41.5 s", "backup": backup_id,
                 "size": size, "duration_s": 41.5, "locations": 2, "pruned": 1})  # fmt: skip
            store.record_event(
                "verify", backup_id, "ok",
                {"verdict": "match", "db_aggregate_key": key, "onchain_aggregate_key": key,
                 "failed_checks": [], "duration_s": 95.0},
                at=base + 3 * 3600 + 200,
            )  # fmt: skip
            run("verify", base + 3 * 3600 + 60, "ok",
                {"summary": f"{backup_id}: match", "backup": backup_id, "verdict": "match",
                 "failed_checks": []})  # fmt: skip
            if day % 7 == 6:
                run("verify-rotate", base + 4 * 3600, "ok",
                    {"summary": "older: match", "backup": backup_id, "verdict": "match",
                     "failed_checks": []})  # fmt: skip
            for hour in range(24):
                at = base + hour * 3600 + 420
                counts = {"access|critical|fail": 3, "firewall|high|warn": 5}
                store.record_event("audit", "host", "ok",
                                   {"score": 72, "open": counts, "findings": findings}, at=at)  # fmt: skip
                store.prune_events("audit", AUDIT_EVENT_KEEP)
                run("audit", at, "problem",
                    {"summary": "score 72, 40 open findings (27 failing)", "score": 72,
                     "open": counts, "summary_counts": {"pass": 30, "fail": 14}})  # fmt: skip
            for slot in range(144):
                run("chain-check", base + slot * 600, "ok",
                    {"summary": "2/2 endpoints up", "endpoints": endpoints,
                     "onchain_aggregate_key": key, "not_set": False, "disagree": False})  # fmt: skip
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = store.run_counts()
    files = {p.name: p.stat().st_size for p in state_dir.iterdir()}
    return {
        "seconds": time.perf_counter() - started,
        "db_bytes": sum(files.values()),
        "runs_counted": sum(counts.values()),
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_daemon(root: Path, state: Path) -> tuple[subprocess.Popen[str], int]:
    config = root / "sbtc-ops.toml"
    config.write_text(
        f'state_dir = "{state}"\n[serve]\nbackup_cron = ""\nverify_rotate_cron = ""\n'
        'audit_cron = ""\nchain_check_cron = ""\nbind = "127.0.0.1:0"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBTC_OPS_", "SIGNER_"))}
    exe = str(Path(sys.executable).parent / "sbtc-ops")
    proc = subprocess.Popen(
        [exe, "--config", str(config), "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line}")
    return proc, int(match.group(1))


def wrk(port: int, duration: int) -> dict[str, str]:
    done = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    )
    out = done.stdout
    result = {"raw": out}
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}"] = match.group(1) if match else "?"
    match = re.search(r"Requests/sec:\s+(\S+)", out)
    result["rps"] = match.group(1) if match else "?"
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = match.group(1) if match else "?"
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = match.group(1) if match else "0"
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1) if errors else "none"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs, one after another")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    state = root / "state"
    try:
        year = simulate_year(state, time.time() - 365 * DAY)
        print(json.dumps({"year_of_history": year}), flush=True)
        proc, port = start_daemon(root, state)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read()
            time.sleep(10)  # idle
            idle = rss_kb(proc.pid)
            rounds = []
            for _ in range(args.rounds):
                load = os.getloadavg()[0]
                rounds.append({"load_before": round(load, 2), **wrk(port, args.duration)})
            result = rounds[-1]
            after = rss_kb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        print(
            json.dumps(
                {
                    "metrics_bytes": len(body),
                    "idle_rss_mb": round(idle / 1024, 1),
                    "rss_after_load_mb": round(after / 1024, 1),
                    "wrk": [{k: v for k, v in r.items() if k != "raw"} for r in rounds],
                }
            )
        )
        print(result["raw"])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
