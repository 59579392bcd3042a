"""Audit area `backups` (BAK-*): real PostgreSQL, real backups, the recorded verify outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.audit.service import audit_host
from sbtc_ops.backup.service import request_from_settings, run_backup
from sbtc_ops.config import Settings
from sbtc_ops.discover.load import load_settings
from sbtc_ops.results import Status
from sbtc_ops.state import StateStore
from tests.support.pg import SourceServer, new_signer_database

pytestmark = pytest.mark.postgres


def settings_for(tmp_path: Path, db_url: str | None, **backup: Any) -> Settings:
    overrides: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "backup": {"local_dir": str(tmp_path / "backups"), **backup},
    }
    if db_url:
        overrides["db"] = {"url": db_url}
    return load_settings(overrides=overrides, environ={})


def statuses(settings: Settings, now: datetime | None = None) -> dict[str, Status]:
    report = audit_host(settings, areas=["backups"], now=now)
    return {f.id: f.status for f in report.findings}


def test_no_location_skips_everything(tmp_path: Path) -> None:
    settings = load_settings(overrides={"state_dir": str(tmp_path / "s")}, environ={})
    found = statuses(settings)
    assert found["BAK-001"] == Status.SKIP
    assert found["BAK-004"] == Status.SKIP
    assert found["BAK-005"] == Status.SKIP


def test_backup_lifecycle_findings(tmp_path: Path, source_server: SourceServer) -> None:
    url, facts = new_signer_database(source_server, target_mb=2, seed=11)
    settings = settings_for(tmp_path, url)

    before = statuses(settings)
    assert before["BAK-001"] == Status.FAIL  # no backup at all
    assert before["BAK-005"] == Status.WARN  # newest DKG key in no backup
    assert before["BAK-003"] == Status.WARN  # not encrypted
    assert before["BAK-004"] == Status.WARN  # local only

    outcome = run_backup(settings, request_from_settings(settings, None))
    after = statuses(settings)
    assert after["BAK-001"] == Status.PASS
    assert after["BAK-005"] == Status.PASS
    assert after["BAK-002"] == Status.WARN  # never verified

    with StateStore.open(settings.state_dir) as store:
        store.record_event("verify", outcome.manifest.id, "mismatch")
    assert statuses(settings)["BAK-002"] == Status.FAIL
    with StateStore.open(settings.state_dir) as store:
        store.record_event("verify", outcome.manifest.id, "ok")
    assert statuses(settings)["BAK-002"] == Status.PASS
    # With signing configured, only a drill that left a signed attestation counts.
    signing = settings_for(tmp_path, url)
    signing.attest.allowed_signers = tmp_path / "allowed_signers"
    assert statuses(signing)["BAK-002"] == Status.WARN
    with StateStore.open(settings.state_dir) as store:
        store.record_event("attestation", outcome.manifest.id, "unsigned", {"verdict": "match"})
    assert statuses(signing)["BAK-002"] == Status.WARN
    with StateStore.open(settings.state_dir) as store:
        store.record_event("attestation", outcome.manifest.id, "signed", {"verdict": "match"})
    assert statuses(signing)["BAK-002"] == Status.PASS

    # Two days later the backup is too old, and the verification too (after 8 days).
    later = datetime.now(UTC) + timedelta(days=2)
    assert statuses(settings, now=later)["BAK-001"] == Status.FAIL
    assert statuses(settings, now=later + timedelta(days=8))["BAK-002"] == Status.WARN

    # A new DKG round after the backup is unprotected until the next backup.
    with source_server.connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute(
            "INSERT INTO sbtc_signer.dkg_shares (aggregate_key, tweaked_aggregate_key, "
            "encrypted_private_shares, public_shares, script_pubkey, signer_set_public_keys, "
            "signature_share_threshold, dkg_shares_status, started_at_bitcoin_block_hash, "
            "started_at_bitcoin_block_height, created_at) "
            "SELECT '\\x02' || sha256('new-round'), tweaked_aggregate_key, "
            "encrypted_private_shares, public_shares, script_pubkey, signer_set_public_keys, "
            "signature_share_threshold, 'unverified', started_at_bitcoin_block_hash, "
            "started_at_bitcoin_block_height, now() + interval '1 minute' "
            "FROM sbtc_signer.dkg_shares LIMIT 1"
        )
    assert statuses(settings)["BAK-005"] == Status.WARN
    dkg = run_backup(settings, request_from_settings(settings, None, dkg_only=True))
    assert dkg.manifest.kind == "dkg-only"
    assert statuses(settings)["BAK-005"] == Status.PASS
    assert facts.newest_verified_key.hex() in {k.aggregate_key for k in dkg.manifest.dkg_keys}


def test_encrypted_and_offsite_pass(tmp_path: Path) -> None:
    recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    encrypted = statuses(settings_for(tmp_path, None, recipients=[recipient]))
    assert encrypted["BAK-003"] == Status.PASS
    s3 = {"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:9"}  # nothing listens
    offsite = statuses(settings_for(tmp_path, None, s3=s3))
    assert offsite["BAK-004"] == Status.PASS
    # The bucket is unreachable here: checks that must list it say so instead of passing.
    assert offsite["BAK-001"] == Status.ERROR
