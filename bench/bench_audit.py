"""Benchmark: `sbtc-ops audit` of the security areas on this host, everything local.

Target (issue 5): a full audit of access, firewall, secrets and keys completes in <= 3 s wall.

The audit runs live (root /): real `sshd -T`, `nft -j list ruleset`, `ss -Htuln` and
`docker ps` on this machine, plus the `weak` fixture's signer config, .env, compose files,
secrets inventory and roster copied to a temporary directory and referenced by absolute path
(so the compose, secrets and key checks have real work to do). Measured with hyperfine
(process start included, as an operator runs it).

    /opt/sbtc-venv/bin/python bench/bench_audit.py [--runs N] [--all-areas]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "audit" / "weak" / "root"
SBTC_OPS = Path(sys.executable).parent / "sbtc-ops"


def prepare(workdir: Path) -> Path:
    tree = workdir / "host"
    shutil.copytree(FIXTURE, tree)
    state = workdir / "state"
    config = workdir / "sbtc-ops.toml"
    config.write_text(
        f'state_dir = "{state}"\n'
        "[signer]\n"
        f'config_path = "{tree}/opt/sbtc/sbtc-signer/signer-config.toml"\n'
        f'env_file = "{tree}/opt/sbtc/.env"\n'
        "[docker]\n"
        f'compose_files = ["{tree}/opt/sbtc/docker-compose.yml", '
        f'"{tree}/opt/sbtc/nodes/docker-compose.chains.yml"]\n'
        "[audit]\n"
        f'secrets_inventory = "{tree}/etc/sbtc-ops/secrets.toml"\n'
        f'roster_file = "{tree}/etc/sbtc-ops/roster.toml"\n'
        f'pg_hba_files = ["{tree}/opt/sbtc/postgres/data/pg_hba.conf"]\n'
        'ssh_users = ["root"]\n'
    )
    return config


def start_local_sources(stack: contextlib.ExitStack, workdir: Path) -> str:
    """Issue 6's network sources, all local (fakes on 127.0.0.1): extra config lines.

    Bitcoin Core RPC, the Stacks node, GitHub releases, OSV, the signer's metrics (two scrapes
    audit.metrics_interval_s = 1 s apart, the default) and its /info, plus a local backup.
    """
    sys.path.insert(0, str(REPO))
    from tests.fakes.bitcoind import FakeBitcoind
    from tests.fakes.github_releases import FakeGitHub, reference_releases
    from tests.fakes.osv import FakeOSV
    from tests.fakes.prom_endpoint import FakeMetrics
    from tests.fakes.signer_info import AGGREGATE_KEY, FakeSignerInfo
    from tests.fakes.stacks_node import FakeStacksNode
    from tests.support.audit2 import store_backup

    bitcoind = stack.enter_context(FakeBitcoind())
    stacks = stack.enter_context(FakeStacksNode())
    github = stack.enter_context(FakeGitHub(limit=10_000))
    reference_releases(github)
    osv = stack.enter_context(FakeOSV())
    metrics = stack.enter_context(FakeMetrics())
    info = stack.enter_context(FakeSignerInfo())
    store_backup(workdir / "backups", "20261124T000000Z", AGGREGATE_KEY)
    return (
        f'bitcoin_rpc_url = "{bitcoind.rpc_url()}"\n'
        f'stacks_node_url = "{stacks.url}"\n'
        f'github_api_url = "{github.url}"\n'
        f'osv_api_url = "{osv.url}"\n'
        f'metrics_url = "{metrics.url}/metrics"\n'
        f'signer_info_url = "{info.url}/info"\n'
        'chainstate_paths = ["/"]\n'
        'log_files = ["/var/log/*.log"]\n'
        f'[backup]\nlocal_dir = "{workdir / "backups"}"\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--all-areas", action="store_true", help="every registered area")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="forget the previous metrics scrape before each run (MON-005 then waits "
        "audit.metrics_interval_s for a second scrape, as on a first audit)",
    )
    args = parser.parse_args()
    if shutil.which("hyperfine") is None:
        print("hyperfine is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp, contextlib.ExitStack() as fakes:
        workdir = Path(tmp)
        config = prepare(workdir)
        if args.all_areas:
            with config.open("a") as handle:
                handle.write(start_local_sources(fakes, workdir))
        only = "" if args.all_areas else " --only access,firewall,secrets,keys"
        command = f"{SBTC_OPS} --config {config} audit{only} --json > /dev/null"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SBTC_OPS_", "SIGNER_"))}
        # One run to show what is measured (finding count, the slowest checks).
        probe = subprocess.run(
            [str(SBTC_OPS), "--config", str(config), "audit", *only.split(), "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        doc = json.loads(probe.stdout)
        slowest = sorted(doc["findings"], key=lambda f: -f["duration_s"])[:3]
        print(
            f"{len(doc['findings'])} checks, in-process {doc['duration_s']:.3f}s; slowest: "
            + ", ".join(f"{f['id']} {f['duration_s']:.3f}s" for f in slowest)
        )
        export = workdir / "hyperfine.json"
        subprocess.run(
            [
                "hyperfine",
                "--warmup",
                "1",
                "--runs",
                str(args.runs),
                "--ignore-failure",  # exit 1 = findings, expected for the weak fixture
                "--export-json",
                str(export),
                *(
                    ["--prepare", f"rm -f {workdir}/state/audit-metrics-scrape.json"]
                    if args.cold
                    else []
                ),
                command,
            ],
            env=env,
            check=True,
        )
        result = json.loads(export.read_text())["results"][0]
        print(
            f"wall: mean {result['mean']:.3f}s  min {result['min']:.3f}s  "
            f"max {result['max']:.3f}s  (target <= 3 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
