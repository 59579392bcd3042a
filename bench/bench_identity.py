"""Benchmark: the schema identity read (pg/schema_identity.read_canonical_schema) on the
bench signer database (issue 20: under 1 s on the 1 GB bench DB).

It reads only the catalog (tests/test_schema_identity.py asserts the plan touches catalog
relations only), so its cost follows the number of objects, not the data size; --size-mb
sets the generated database's size all the same. Median and max over --runs reads, as the
drill's reader role does it (search_path pinned, one transaction rolled back).

    /opt/sbtc-venv/bin/python bench/bench_identity.py [--size-mb 1024] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sbtc_ops.devtools.signer_db import generate  # noqa: E402
from sbtc_ops.pg import ThrowawayCluster  # noqa: E402
from sbtc_ops.pg.schema_identity import read_canonical_schema  # noqa: E402

TARGET_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    password = secrets.token_hex(12)
    with ThrowawayCluster(tcp_port=0) as cluster:
        cluster.create_role("signer", password)
        cluster.create_database("signer", owner="signer")
        started = time.monotonic()
        generate(cluster.tcp_url("signer", "signer", password), target_mb=args.size_mb, seed=1)
        generated_s = time.monotonic() - started
        timings = []
        with cluster.connect("signer") as conn:
            for _ in range(args.runs):
                t0 = time.perf_counter()
                schema = read_canonical_schema(conn, include_deployment=True)
                timings.append(time.perf_counter() - t0)
    result = {
        "size_mb": args.size_mb,
        "generated_s": round(generated_s, 1),
        "objects": len(schema.objects),
        "runs": args.runs,
        "median_s": round(statistics.median(timings), 4),
        "max_s": round(max(timings), 4),
        "first_s": round(timings[0], 4),
        "target_s": TARGET_S,
        "ok": max(timings) < TARGET_S,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
