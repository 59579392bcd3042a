"""Benchmark: `sbtc-ops verify` against the manual procedure and the tuned floor (issue 4).

On a generated signer database (default 1 GB) backed up by `sbtc-ops backup` (custom format),
measured in the same run, alternating (the order rotates every round), medians over rounds:

  (a) manual: initdb + start a default-configured cluster + `pg_restore -j 1` + the page's
      query in psql (what an operator does by hand);
  (b) floor:  initdb + start a cluster tuned like ThrowawayCluster (TUNED_SETTINGS) +
      `pg_restore -j 2`, no checks;
  (c) verify: `sbtc-ops verify BACKUP --repo REPO --stacks-url FAKE --json` end to end (checksum,
      restore, amcheck, every check, cluster removal) with a fake Stacks node serving the
      right key; its own peak RSS (VmHWM) and its client children's are sampled.

Targets: (c) <= 0.8 x (a) and <= 1.25 x (b); peak RSS of the sbtc-ops process <= 150 MB.
(a) and (b) use the same ThrowawayCluster code as verify for initdb/start (`initdb
--no-sync`), which only makes them faster; their stop/removal is reported but not counted.

    /opt/sbtc-venv/bin/python bench/bench_verify.py [--size-mb 1024] [--rounds 3]
        [--data DIR]  # keep/reuse the generated backup between invocations
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
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
sys.path.insert(0, str(REPO))  # tests.fakes.stacks_node: the fake Stacks node

from tests.fakes.stacks_node import FakeStacksNode  # noqa: E402

from sbtc_ops.devtools.signer_db import generate  # noqa: E402
from sbtc_ops.pg import ThrowawayCluster, find_binaries  # noqa: E402
from sbtc_ops.pg.cluster import TUNED_SETTINGS  # noqa: E402

SBTC_OPS = Path(sys.executable).parent / "sbtc-ops"
PAGE_QUERY = (
    "SELECT aggregate_key FROM sbtc_signer.dkg_shares WHERE dkg_shares_status = 'verified' "
    "ORDER BY created_at DESC"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the data ---------------------------------------------------------------------------------


def prepare_backup(data: Path, size_mb: float, seed: int) -> dict[str, Any]:
    """Generate the database and back it up once; later invocations with --data reuse it."""
    facts_path = data / "facts.json"
    if facts_path.exists():
        facts: dict[str, Any] = json.loads(facts_path.read_text())
        log(f"reusing backup {facts['backup_id']} in {data}")
        return facts
    data.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    with ThrowawayCluster(tcp_port=0) as source:
        source.create_role("signer", password)
        source.create_database("signer", owner="signer")
        url = source.tcp_url("signer", "signer", password)
        log(f"generating a {size_mb:.0f} MB signer database…")
        started = time.monotonic()
        generated = generate(url, target_mb=size_mb, seed=seed)
        generate_s = time.monotonic() - started
        log(f"  {generated.schema_bytes / 2**20:.0f} MB in {generate_s:.0f} s; backing up…")
        started = time.monotonic()
        backup = run(
            [str(SBTC_OPS), "backup", "--db", url, "--repo", str(data / "repo"), "--json"],
            env=sbtc_env(data / "state"),
        )
        backup_s = time.monotonic() - started
    manifest = json.loads(backup.stdout)["backup"]
    newest = generated.newest_verified
    facts = {
        "backup_id": manifest["id"],
        "schema_bytes": generated.schema_bytes,
        "archive_bytes": manifest["total_size"],
        "rows": sum(generated.row_counts.values()),
        "generate_s": generate_s,
        "backup_s": backup_s,
        "aggregate_key": newest.aggregate_key.hex(),
        "signer_set": [k.hex() for k in newest.signer_set_public_keys],
        "threshold": newest.threshold,
        "deployer": generated.deployer,
    }
    facts_path.write_text(json.dumps(facts, indent=2))
    return facts


def sbtc_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBTC_OPS_", "SIGNER_"))}
    env["SBTC_OPS_STATE_DIR"] = str(state_dir)
    return env


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


# -- (a) and (b) --------------------------------------------------------------------------------


def restore_by_hand(dump: Path, *, tuned: bool, jobs: int, query: bool) -> dict[str, float]:
    """initdb + start + pg_restore (+ the page's query); the stop is timed apart."""
    times: dict[str, float] = {}
    started = time.monotonic()
    cluster = ThrowawayCluster(tuned=tuned)
    cluster.start()
    try:
        times["initdb"] = cluster.timings["initdb"]
        times["start"] = cluster.timings["start"]
        cluster.create_database("signer")
        env = {**cluster.client_env()}
        step = time.monotonic()
        argv = [
            str(cluster.binaries.pg_restore),
            "--no-owner",
            "--no-privileges",
            f"--jobs={jobs}",
            f"--dbname={cluster.conninfo('signer')}",
            str(dump),
        ]
        run(argv, env=env)
        times["restore"] = time.monotonic() - step
        if query:
            step = time.monotonic()
            answer = run(
                [str(cluster.binaries.psql), "-X", "-At", "-d", "signer", "-c", PAGE_QUERY],
                env=env,
            )
            times["query"] = time.monotonic() - step
            assert answer.stdout.startswith("\\x"), answer.stdout[:200]
        times["total"] = time.monotonic() - started
    finally:
        step = time.monotonic()
        cluster.stop()
        times["stop"] = time.monotonic() - step
    return times


# -- (c) -------------------------------------------------------------------------------------------


class RssSampler:
    """Peak RSS (VmHWM, a high-water mark) of a process and, separately, of its children."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.own_kb = 0
        self.children_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.own_kb = max(self.own_kb, _hwm_kb(self.pid))
            for child, name in _children(self.pid):
                self.children_kb[name] = max(self.children_kb.get(name, 0), _hwm_kb(child))
            self._stop.wait(self.interval_s)


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(parent: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append((int(entry.name), name))
    return found


def verify_end_to_end(
    facts: dict[str, Any], data: Path, node_url: str, state: Path, cold: bool = False
) -> dict[str, Any]:
    if cold:
        shutil.rmtree(state / "cluster-templates", ignore_errors=True)
    argv = [
        str(SBTC_OPS),
        "verify",
        facts["backup_id"],
        "--repo",
        str(data / "repo"),
        "--stacks-url",
        node_url,
        "--json",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=sbtc_env(state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with RssSampler(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"verify failed ({proc.returncode}): {stdout[-3000:]} {stderr[-2000:]}")
    report = json.loads(stdout)
    assert report["verdict"] == "match", report
    return {
        "total": wall,
        "rss_own_mb": rss.own_kb / 1024,
        "rss_children_mb": {k: v / 1024 for k, v in rss.children_kb.items()},
        "timings": report["timings"],
        "checks": {c["id"]: c["duration_s"] for c in report["checks"]},
    }


# -- the run ----------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    binaries = find_binaries(tool_hint="postgres")
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": f"{binaries.version} ({binaries.source})",
        "loadavg_before": os.getloadavg(),
        "tuned_settings": TUNED_SETTINGS,
    }


def cpu_seconds() -> tuple[float, float]:
    """(descendants, this process) user+system CPU seconds. Descendants count once reaped,
    and postgres backends are reaped by their postmaster, which is reaped by its parent:
    after a case its whole process tree is in. A measure of work that other jobs on a
    shared host do not inflate as much as they inflate wall time."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


def compile_installed_package() -> None:
    """The package's bytecode, as `pip install` leaves it (it compiles every module). An
    editable checkout run with PYTHONDONTWRITEBYTECODE=1 (this machine's default) would
    otherwise compile ~70 modules from source in every verify: 0.2-0.3 s no installed
    sbtc-ops spends."""
    import sbtc_ops

    compileall.compile_dir(Path(sbtc_ops.__file__).parent, quiet=1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, help="keep the backup here and reuse it")
    parser.add_argument("--json-out", type=Path, help="write every measurement here")
    args = parser.parse_args()

    data = args.data or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    compile_installed_package()
    machine = machine_facts()
    facts = prepare_backup(data, args.size_mb, args.seed)
    dump = data / "repo" / facts["backup_id"] / "signer.dump"
    results: dict[str, list[Any]] = {"manual": [], "floor": [], "verify": [], "verify_cold": []}
    # The state the backup was taken with: it holds the schema reference the backup recorded
    # (a fresh state has none, and the drill would say `unknown-schema`). One state for the
    # whole run, as on a signer's host: its first verify keeps the throwaway cluster's
    # template (pg/template.py), measured apart as `verify_first`.
    state = Path(tempfile.mkdtemp(prefix="bench-verify-state-"))
    shutil.copytree(data / "state", state, dirs_exist_ok=True)
    with FakeStacksNode(deployer=facts["deployer"]) as node:
        key = bytes.fromhex(facts["aggregate_key"])
        node.set_signer_data(
            key, [bytes.fromhex(k) for k in facts["signer_set"]], threshold=facts["threshold"]
        )
        first = verify_end_to_end(facts, data, node.url, state)
        log(f"first verify on this state: {first['total']:.2f} s")
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("manual", lambda: restore_by_hand(dump, tuned=False, jobs=1, query=True)),
            ("floor", lambda: restore_by_hand(dump, tuned=True, jobs=2, query=False)),
            ("verify", lambda: verify_end_to_end(facts, data, node.url, state)),
            # Without a kept cluster template (removed first): initdb as before it existed,
            # plus the copy that keeps one.
            ("verify_cold", lambda: verify_end_to_end(facts, data, node.url, state, cold=True)),
        ]
        for round_index in range(args.rounds):
            shift = round_index % len(cases)
            order = cases[shift:] + cases[:shift]
            for name, case in order:
                before = cpu_seconds()
                measured = case()
                used = [after - prior for after, prior in zip(cpu_seconds(), before, strict=True)]
                # verify: its whole process tree; (a), (b): this process's part too
                measured["cpu_s"] = used[0] + (0.0 if name.startswith("verify") else used[1])
                results[name].append(measured)
                log(
                    f"round {round_index + 1} {name}: {measured['total']:.2f} s, "
                    f"{measured['cpu_s']:.1f} CPU-s"
                )
    shutil.rmtree(state, ignore_errors=True)
    summary = summarize(results)
    summary["verify_first_s"] = first["total"]
    cold = median([r["total"] for r in results["verify_cold"]])
    summary["verify_cold_s"] = cold
    summary["verify_cold_over_manual"] = cold / summary["manual_s"]
    summary["verify_cold_over_floor"] = cold / summary["floor_s"]
    summary["verify_cold_initdb_s"] = median(
        [r["timings"].get("cluster.initdb", 0.0) for r in results["verify_cold"]]
    )
    summary["verify_first_phases_s"] = first["timings"]
    document = {"machine": machine, "data": facts, "summary": summary, "runs": results}
    document["machine"]["loadavg_after"] = os.getloadavg()
    if args.json_out:
        args.json_out.write_text(json.dumps(document, indent=2))
    print(json.dumps({"machine": document["machine"], "data": facts, "summary": summary}, indent=2))
    if args.data is None:
        shutil.rmtree(data, ignore_errors=True)
    return 0


def cpu_ratio(results: dict[str, list[Any]], other: str) -> float:
    return median([r["cpu_s"] for r in results["verify"]]) / median(
        [r["cpu_s"] for r in results[other]]
    )


def per_round(results: dict[str, list[Any]], other: str) -> dict[str, Any]:
    ratios = [
        v["total"] / o["total"] for v, o in zip(results["verify"], results[other], strict=True)
    ]
    return {"median": median(ratios), "each": [round(r, 2) for r in ratios]}


def summarize(results: dict[str, list[Any]]) -> dict[str, Any]:
    manual = median([r["total"] for r in results["manual"]])
    floor = median([r["total"] for r in results["floor"]])
    verify = median([r["total"] for r in results["verify"]])
    phases = sorted({p for r in results["verify"] for p in r["timings"]})
    checks = sorted({c for r in results["verify"] for c in r["checks"]})
    return {
        "manual_s": manual,
        "manual_phases_s": {
            p: median([r[p] for r in results["manual"]])
            for p in ("initdb", "start", "restore", "query", "stop")
        },
        "floor_s": floor,
        "floor_phases_s": {
            p: median([r[p] for r in results["floor"]])
            for p in ("initdb", "start", "restore", "stop")
        },
        "verify_s": verify,
        "verify_over_manual": verify / manual,
        "verify_over_floor": verify / floor,
        "cpu_s": {k: median([r["cpu_s"] for r in v]) for k, v in results.items()},
        "cpu_verify_over_manual": cpu_ratio(results, "manual"),
        "cpu_verify_over_floor": cpu_ratio(results, "floor"),
        # Paired within each round (the three ran back to back): steadier on a shared host.
        "per_round_verify_over_manual": per_round(results, "manual"),
        "per_round_verify_over_floor": per_round(results, "floor"),
        "verify_phases_s": {
            p: median([r["timings"].get(p, 0.0) for r in results["verify"]]) for p in phases
        },
        "verify_checks_s": {
            c: median([r["checks"].get(c, 0.0) for r in results["verify"]]) for c in checks
        },
        "verify_rss_own_mb_max": max(r["rss_own_mb"] for r in results["verify"]),
        "verify_rss_children_mb_max": {
            name: max(r["rss_children_mb"].get(name, 0.0) for r in results["verify"])
            for name in sorted({n for r in results["verify"] for n in r["rss_children_mb"]})
        },
        "all_s": {k: [round(r["total"], 2) for r in v] for k, v in results.items()},
    }


if __name__ == "__main__":
    raise SystemExit(main())
