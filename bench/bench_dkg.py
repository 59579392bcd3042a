"""Benchmark (issue 9): `sbtc-ops backup --dkg-only` on a ≥ 1 GB signer DB, and the DKG
watch's poll query.

Targets: backup --dkg-only ≤ 1 s wall with an archive ≤ 1 MB; the watch query ≤ 5 ms per poll.
For scale, a plain `pg_dump -Fc -t sbtc_signer.dkg_shares` (table only, no schema around it)
of the same DB runs in the same rounds, alternating.

    /opt/sbtc-venv/bin/python bench/bench_dkg.py [--size-mb 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from sbtc_ops.backup.source import dkg_fingerprint
from sbtc_ops.devtools.signer_db import generate
from sbtc_ops.pg import ThrowawayCluster, find_binaries

SBTC_OPS = Path(sys.executable).parent / "sbtc-ops"
PASSWORD = "bench-pw-1"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--polls", type=int, default=2000)
    args = parser.parse_args()
    binaries = find_binaries()
    with ThrowawayCluster(binaries, tcp_port=0) as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.create_role("signer", PASSWORD)
        cluster.create_database("signer", owner="signer")
        url = cluster.tcp_url("signer", "signer", PASSWORD)
        facts = generate(url, target_mb=args.size_mb, seed=7)
        env = {**os.environ, "SBTC_OPS_STATE_DIR": f"{tmp}/state"}
        ours, plain, sizes = [], [], []
        for n in range(args.rounds):
            out = f"{tmp}/plain-{n}.dump"
            plain.append(
                timed(
                    [
                        str(binaries.pg_dump),
                        "-Fc",
                        "-t",
                        "sbtc_signer.dkg_shares",
                        "-f",
                        out,
                        "--dbname",
                        url.replace(f":{PASSWORD}@", "@"),
                    ],
                    {**env, "PGPASSWORD": PASSWORD},
                )
            )
            ours.append(
                timed(
                    [
                        str(SBTC_OPS),
                        "backup",
                        "--dkg-only",
                        "--db",
                        url,
                        "--repo",
                        f"{tmp}/repo",
                        "--json",
                    ],
                    env,
                )
            )
            time.sleep(1.0)  # backup ids are per second
        for backup in sorted(Path(f"{tmp}/repo").iterdir()):
            manifest = json.loads((backup / "manifest.json").read_text())
            sizes.append(manifest["total_size"])
        polls = []
        with psycopg.connect(url) as conn:
            conn.autocommit = True
            for _ in range(args.polls):
                start = time.perf_counter()
                dkg_fingerprint(conn)
                polls.append(time.perf_counter() - start)
        polls.sort()
        result = {
            "db_size_mb": facts.schema_bytes / 1e6,
            "dkg_only_backup_s_median": statistics.median(ours),
            "plain_pg_dump_table_s_median": statistics.median(plain),
            "ratio": statistics.median(ours) / statistics.median(plain),
            "dkg_only_archive_bytes_max": max(sizes),
            "watch_query_ms_median": statistics.median(polls) * 1000,
            "watch_query_ms_p99": polls[int(len(polls) * 0.99)] * 1000,
            "rounds": args.rounds,
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
