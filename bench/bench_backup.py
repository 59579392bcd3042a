"""Benchmark: `sbtc-ops backup` against a plain `pg_dump -Fc` of the same database (issue 3).

On a generated signer database (default 1 GB) on a local PostgreSQL (a ThrowawayCluster on
127.0.0.1 with password auth, like a signer's), measured in the same run, alternating (the
order rotates every round), medians over rounds:

  (a) `pg_dump -Fc` (pg_dump's default compression, gzip level 6): the baseline of the targets;
  (b) `pg_dump -Fc -Z gzip:1`: the same compression as sbtc-ops' default, for reference;
  (c) `sbtc-ops backup --json` (encryption off): snapshot, row counts, dump, checksums,
      fsync, rename, manifest, process start included;
  (d) `sbtc-ops backup --json` with an age recipient (encryption on).

Every run uses the same pg_dump binary (the one sbtc-ops picks). For (c) and (d) the peak RSS
(VmHWM) of the sbtc-ops Python process is sampled, separately from its pg_dump child's.

Targets: (c) wall <= 0.5 x (a) with an archive <= 1.1 x (a)'s; (d) wall <= 0.6 x (a);
peak RSS of the sbtc-ops process <= 150 MB.

    /opt/sbtc-venv/bin/python bench/bench_backup.py [--size-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyrage  # noqa: E402

from sbtc_ops.devtools.signer_db import generate  # noqa: E402
from sbtc_ops.pg import ThrowawayCluster, find_binaries  # noqa: E402
from sbtc_ops.pg.binaries import PgBinaries  # noqa: E402

SBTC_OPS = Path(sys.executable).parent / "sbtc-ops"
TARGETS = {"wall_ratio": 0.5, "size_ratio": 1.1, "wall_ratio_encrypted": 0.6, "rss_mb": 150}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sbtc_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBTC_OPS_", "SIGNER_", "PG"))}
    env["SBTC_OPS_STATE_DIR"] = str(state_dir)
    return env


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1])


def child_pids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class PeakRss(threading.Thread):
    """Samples the high-water mark of a process and, apart, of its children (pg_dump)."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.own_kb = 0
        self.children_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.own_kb = max(self.own_kb, vm_hwm_kb(self.pid))
            for child in child_pids(self.pid):
                self.children_kb = max(self.children_kb, vm_hwm_kb(child))


def machine_facts(binaries: PgBinaries) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": f"{binaries.version} ({binaries.source})",
        "loadavg_before": os.getloadavg(),
    }


class Source:
    """The database to back up, and how each contender reaches it."""

    def __init__(self, cluster: ThrowawayCluster, password: str, binaries: PgBinaries) -> None:
        self.cluster = cluster
        self.password = password
        self.binaries = binaries
        self.url = cluster.tcp_url("signer", "signer", password)

    def pg_dump_argv(self, output: Path, *extra: str) -> list[str]:
        conninfo = f"host=127.0.0.1 port={self.cluster.port} user=signer dbname=signer"
        return [str(self.binaries.pg_dump), "-Fc", *extra, "--file", str(output), "-d", conninfo]

    def pg_dump_env(self) -> dict[str, str]:
        return {**sbtc_env(Path("/nonexistent")), "PGPASSWORD": self.password}

    def sbtc_env(self, state: Path) -> dict[str, str]:
        # The URL (with its password) through the environment, as from a config file.
        return {**sbtc_env(state), "SBTC_OPS_DB__URL": self.url}


def run_measured(argv: list[str], env: dict[str, str], sample_rss: bool) -> dict[str, Any]:
    """Wall time, exit status, rusage (max RSS over the process and its waited children) and,
    when asked, the sampled VmHWM of the process itself and of its children by name."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    sampler = PeakRss(proc.pid) if sample_rss else None
    if sampler is not None:
        sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if sampler is not None:
        sampler.done.set()
        sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    result: dict[str, Any] = {"wall_s": wall, "stdout": stdout.decode()}
    if sampler is not None:
        result["own_rss_mb"] = sampler.own_kb / 1024
        result["pg_dump_rss_mb"] = sampler.children_kb / 1024
    return result


def contenders(source: Source, work: Path, recipient: str) -> dict[str, Callable[[int], Any]]:
    def pg_dump(extra: tuple[str, ...]) -> Callable[[int], dict[str, Any]]:
        def go(run: int) -> dict[str, Any]:
            output = work / f"plain-{run}.dump"
            result = run_measured(
                source.pg_dump_argv(output, *extra), source.pg_dump_env(), sample_rss=False
            )
            result["size"] = output.stat().st_size
            output.unlink()
            return result

        return go

    def sbtc_ops(extra: tuple[str, ...]) -> Callable[[int], dict[str, Any]]:
        def go(run: int) -> dict[str, Any]:
            repo = work / f"repo-{run}"
            argv = [str(SBTC_OPS), "backup", "--repo", str(repo), "--json", *extra]
            result = run_measured(argv, source.sbtc_env(work / "state"), sample_rss=True)
            manifest = json.loads(result.pop("stdout"))["backup"]
            result["size"] = manifest["total_size"]
            result["phases_s"] = manifest["phases_s"]
            result["compression"] = manifest["compression"]
            shutil.rmtree(repo)
            return result

        return go

    return {
        "pg_dump -Fc": pg_dump(()),
        "pg_dump -Fc -Z gzip:1": pg_dump(("-Z", "gzip:1")),
        "sbtc-ops backup": sbtc_ops(()),
        "sbtc-ops backup (age)": sbtc_ops(("--recipient", recipient)),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        entry: dict[str, Any] = {
            "wall_s": [round(r["wall_s"], 2) for r in runs],
            "median_wall_s": round(median([r["wall_s"] for r in runs]), 2),
            "median_size_mb": round(median([r["size"] for r in runs]) / 1e6, 1),
        }
        if "own_rss_mb" in runs[0]:
            entry["peak_own_rss_mb"] = round(max(r["own_rss_mb"] for r in runs), 1)
            entry["peak_pg_dump_rss_mb"] = round(max(r["pg_dump_rss_mb"] for r in runs), 1)
            entry["median_phases_s"] = {
                phase: round(median([r["phases_s"].get(phase, 0.0) for r in runs]), 2)
                for phase in runs[0]["phases_s"]
            }
            entry["compression"] = runs[0]["compression"]
        summary[name] = entry
    base = summary["pg_dump -Fc"]
    for name in ("sbtc-ops backup", "sbtc-ops backup (age)"):
        entry = summary[name]
        entry["wall_ratio"] = round(entry["median_wall_s"] / base["median_wall_s"], 3)
        entry["size_ratio"] = round(entry["median_size_mb"] / base["median_size_mb"], 3)
    return summary


def verdicts(summary: dict[str, Any]) -> dict[str, bool]:
    plain, age = summary["sbtc-ops backup"], summary["sbtc-ops backup (age)"]
    return {
        "wall <= 0.5x (encryption off)": plain["wall_ratio"] <= TARGETS["wall_ratio"],
        "archive <= 1.1x (encryption off)": plain["size_ratio"] <= TARGETS["size_ratio"],
        "wall <= 0.6x (encryption on)": age["wall_ratio"] <= TARGETS["wall_ratio_encrypted"],
        "peak RSS <= 150 MB": max(plain["peak_own_rss_mb"], age["peak_own_rss_mb"])
        <= TARGETS["rss_mb"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sbtc-bench-backup-", dir="/tmp"))
    password = secrets.token_hex(12)
    try:
        with ThrowawayCluster(tcp_port=0) as cluster:
            cluster.create_role("signer", password)
            cluster.create_database("signer", owner="signer")
            binaries = find_binaries(tool_hint="pg_dump", need=("pg_dump",))
            facts = machine_facts(binaries)
            source = Source(cluster, password, binaries)
            log(f"generating a {args.size_mb:.0f} MB signer database…")
            started = time.monotonic()
            generated = generate(source.url, target_mb=args.size_mb, seed=args.seed)
            generate_s = time.monotonic() - started
            log(f"  {generated.schema_bytes / 2**20:.0f} MB in {generate_s:.0f} s")
            recipient = str(pyrage.x25519.Identity.generate().to_public())
            runs = contenders(source, work, recipient)
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
            names = list(runs)
            for round_index in range(args.rounds):
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    result = runs[name](round_index)
                    results[name].append(result)
                    log(
                        f"round {round_index + 1} {name}: {result['wall_s']:.2f} s, "
                        f"{result['size'] / 1e6:.1f} MB"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(results)
    report = {
        "machine": {**facts, "loadavg_after": os.getloadavg()},
        "database": {
            "schema_mb": round(generated.schema_bytes / 2**20),
            "rows": sum(generated.row_counts.values()),
            "generate_s": round(generate_s, 1),
        },
        "pg_dump": f"{binaries.pg_dump} ({binaries.version})",
        "rounds": args.rounds,
        "summary": summary,
        "targets_met": verdicts(summary),
    }
    text = json.dumps(report, indent=2, default=str)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
