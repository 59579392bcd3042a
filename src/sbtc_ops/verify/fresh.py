"""A backup taken now and verified at once: the proof upgrade-check asks for before an upgrade
(the CLI hands this step to sbtc_ops.signer.upgrade.run_upgrade_check)."""

from __future__ import annotations

from sbtc_ops.backup.service import request_from_settings, run_backup
from sbtc_ops.config import Settings
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.signer.upgrade import BackupProof, Phase
from sbtc_ops.verify.drill import VerifyRequest, run_verify


def prove_fresh_backup(settings: Settings, phase: Phase) -> BackupProof:
    """Back up to every configured storage, then verify that backup. No database configured
    is a usage error (exit 2); a failed backup or verify is a problem in the proof."""
    request = request_from_settings(settings, None)
    phase("taking a backup")
    try:
        outcome = run_backup(settings, request)
    except SbtcOpsError as exc:
        return BackupProof(problem=f"the backup failed: {exc.message}")
    manifest = outcome.manifest
    backup = {
        "id": manifest.id,
        "size": manifest.total_size,
        "migrations": len(manifest.migrations),
        "newest_verified_aggregate_key": manifest.newest_verified_aggregate_key,
    }
    phase(f"verifying backup {manifest.id}")
    verified = run_verify(
        settings, VerifyRequest(backup_ref=manifest.id, jobs=settings.verify.jobs)
    )
    failed = [c.id for c in verified.checks if c.status.is_problem]
    verify = {"verdict": verified.verdict, "ok": verified.ok, "failed_checks": failed}
    if verified.ok:
        return BackupProof(backup, verify)
    problem = (
        f"backup {manifest.id} did not verify ({verified.verdict}"
        + (f"; {', '.join(failed)}" if failed else "")
        + "): do not upgrade without a restorable backup"
    )
    return BackupProof(backup, verify, problem)
