"""`sbtc-ops demo`: the whole backup-and-verify cycle on a generated signer database.

Nothing is needed and nothing is left behind. In one private temporary directory:
a throwaway PostgreSQL (TCP on 127.0.0.1, password auth, as a signer's database is reached)
holding a realistic generated signer database; a throwaway age key; a backup repository; a
state directory (so the operator's own state is never touched). The backup is taken and
verified by the same code as `sbtc-ops backup` and `sbtc-ops verify`; the chain comparison
reads a local stand-in node that serves the generated key — it is labelled as such
everywhere, because it proves nothing about any real chain.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from sbtc_ops.backup.manifest import Manifest
from sbtc_ops.backup.service import request_from_settings, run_backup
from sbtc_ops.config import PostgresSettings, Settings
from sbtc_ops.devtools.signer_db import MAINNET_DEPLOYER, GeneratedDb, generate
from sbtc_ops.devtools.standin_node import LABEL, StandInNode, registry_values
from sbtc_ops.files import PRIVATE_FILE_MODE
from sbtc_ops.pg.cluster import ThrowawayCluster
from sbtc_ops.verify.drill import VerifyRequest, run_verify
from sbtc_ops.verify.report import VerifyReport

DEMO_DB = "signer"
DEMO_ROLE = "signer"
DEMO_SIZE_MB = 3.0
DEMO_SEED = 7
NEXT_STEPS = (
    ("read the aggregate key the signers hold on chain", "sbtc-ops chain aggregate-key"),
    (
        "back up your signer's database",
        "sbtc-ops backup --db postgresql://signer@127.0.0.1:5432/signer --repo /var/backups/sbtc-ops",
    ),
    (
        "restore it in a throwaway cluster and compare with the chain",
        "sbtc-ops verify --latest --repo /var/backups/sbtc-ops",
    ),
)

Step = Callable[[str], Any]


@dataclass
class DemoResult:
    facts: GeneratedDb
    manifest: Manifest
    report: VerifyReport
    chain_url: str
    chain_requests: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.report.ok,
            "demo": True,
            "source": {
                "generated": True,
                "size_mb": DEMO_SIZE_MB,
                "seed": self.facts.seed,
                "dkg_rounds": len(self.facts.keys),
                "newest_verified_key": self.facts.newest_verified_key.hex(),
                "tables": len(self.facts.row_counts),
                "rows": sum(self.facts.row_counts.values()),
            },
            "chain": {"url": self.chain_url, "label": LABEL, "requests": self.chain_requests},
            "backup": self.manifest.model_dump(mode="json"),
            "verify": self.report.to_json(),
            "next_steps": [command for _, command in NEXT_STEPS],
        }


def run_demo(
    postgres: PostgresSettings | None = None,
    step: Step | None = None,
    phase: Callable[[str], Any] | None = None,
) -> DemoResult:
    """Generate, back up, verify; every server and file is gone when this returns."""
    say = step or (lambda _message: None)
    postgres = postgres or PostgresSettings()
    with _private_dir() as work, _source_database(postgres, work) as url:
        say(f"generating a realistic signer database (~{DEMO_SIZE_MB:g} MiB, 6 DKG rounds)")
        facts = generate(url, target_mb=DEMO_SIZE_MB, seed=DEMO_SEED)
        newest = facts.newest_verified
        values = registry_values(
            newest.aggregate_key,
            newest.signer_set_public_keys,
            newest.threshold,
            MAINNET_DEPLOYER,
        )
        with StandInNode(MAINNET_DEPLOYER, values) as node:
            settings = _demo_settings(work, url, node.url, postgres)
            say("taking an encrypted backup with the real backup code")
            manifest = run_backup(settings, request_from_settings(settings, None)).manifest
            say(f"backup {manifest.id}: {manifest.total_size / 1024:.1f} KiB, age-encrypted")
            say(f"verifying it; the chain is read from {node.url} ({LABEL})")
            report = run_verify(
                settings,
                VerifyRequest(
                    backup_ref=manifest.id,
                    signer_secret=facts.signer_private_key,
                    jobs=settings.verify.jobs,
                ),
                phase=phase,
            )
            return DemoResult(facts, manifest, report, node.url, node.requests)


@contextmanager
def _private_dir() -> Iterator[Path]:
    # Short and under /tmp: the socket path of the throwaway clusters must stay short.
    path = Path(tempfile.mkdtemp(prefix="sbtc-ops-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _source_database(postgres: PostgresSettings, work: Path) -> Iterator[str]:
    """A throwaway server standing in for the signer's PostgreSQL; yields its URL (with a
    random password that exists only for this run)."""
    password = secrets.token_urlsafe(18)
    settings = Settings.model_validate(
        {"state_dir": work / "state", "postgres": postgres.model_dump()}
    )
    with ThrowawayCluster.from_settings(settings, tcp_port=0) as cluster:
        cluster.create_role(DEMO_ROLE, password)
        cluster.create_database(DEMO_DB, owner=DEMO_ROLE)
        yield cluster.tcp_url(DEMO_DB, DEMO_ROLE, password)


def _demo_settings(work: Path, db_url: str, chain_url: str, postgres: PostgresSettings) -> Settings:
    identity = pyrage.x25519.Identity.generate()
    identity_file = work / "demo.agekey"
    identity_file.touch(mode=PRIVATE_FILE_MODE)
    identity_file.write_text(f"{identity}\n")
    return Settings.model_validate(
        {
            "network": "mainnet",
            "state_dir": work / "state",
            "db": {"url": db_url},
            "stacks": {"endpoints": [chain_url], "retries": 0},
            "postgres": postgres.model_dump(),
            "backup": {
                "local_dir": work / "backups",
                "recipients": [str(identity.to_public())],
                "identity_file": identity_file,
            },
        }
    )
