"""Benchmark: server settings of the throwaway cluster against the restore alone (issue 21's
floor and manual ratios hinge on it). Each variant restores the bench's custom archive into a
fresh tuned ThrowawayCluster (TUNED_SETTINGS plus the variant's settings) with
`pg_restore --jobs=N`; variants alternate, medians over --rounds.

    python bench/bench_restore_settings.py --data /var/tmp/sbtc-budgets-bench/data [--rounds 3]

--data is bench_verify.py's data directory (it holds facts.json and the backup).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sbtc_ops.pg import ThrowawayCluster  # noqa: E402

VARIANTS: dict[str, tuple[dict[str, str], int]] = {
    "tuned, --jobs=2": ({}, 2),
    "parallel index builds off": ({"max_parallel_maintenance_workers": "0"}, 2),
    "parallel index builds 2": ({"max_parallel_maintenance_workers": "2"}, 2),
    "shared_buffers 512MB, maintenance_work_mem 1GB": (
        {"shared_buffers": "512MB", "maintenance_work_mem": "1GB"},
        2,
    ),
    "max_wal_size 256MB": ({"max_wal_size": "256MB"}, 2),
    "--jobs=1": ({}, 1),
    "--jobs=3": ({}, 3),
}


def restore_once(dump: Path, extra: dict[str, str], jobs: int) -> float:
    with ThrowawayCluster(extra_settings=extra) as cluster:
        cluster.create_database("signer")
        argv = [str(cluster.binaries.pg_restore), "--no-owner", "--no-privileges"]
        argv += [f"--jobs={jobs}", f"--dbname={cluster.conninfo('signer')}", str(dump)]
        started = time.monotonic()
        subprocess.run(argv, check=True, env=cluster.client_env())
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    facts = json.loads((args.data / "facts.json").read_text())
    dump = args.data / "repo" / facts["backup_id"] / "signer.dump"
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        names = list(VARIANTS)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            extra, jobs = VARIANTS[name]
            results[name].append(round(restore_once(dump, extra, jobs), 2))
            print(f"round {round_index + 1} {name}: {results[name][-1]} s", file=sys.stderr)
    summary = {name: {"median_s": statistics.median(v), "each": v} for name, v in results.items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
