"""From a finished drill to the evidence its attestation signs (attest/statement.py).

Only what the drill itself established goes in: digests it checked (the manifest's, once the
checksum check passed; else recomputed from the files), the verdict and every check, the keys
it read, and the Stacks tip observed right after the on-chain read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbtc_ops import __version__
from sbtc_ops.attest import store
from sbtc_ops.attest.service import host_name
from sbtc_ops.attest.statement import DrillEvidence, Subject
from sbtc_ops.backup.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES
from sbtc_ops.backup.storage import Storage, StorageError
from sbtc_ops.files import UnsafeFileError, read_capped
from sbtc_ops.install import lock_digest
from sbtc_ops.redact import redact_url
from sbtc_ops.stacks import StacksError, get_info

if TYPE_CHECKING:
    from sbtc_ops.backup.archive import LocatedBackup
    from sbtc_ops.config import Settings
    from sbtc_ops.verify.report import VerifyReport

HASH_CHUNK = 1 << 20


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def build_evidence(
    settings: Settings,
    report: VerifyReport,
    located: LocatedBackup | None,
    storages: list[Storage],
    answered_urls: list[str],
    window: tuple[float, float],
) -> DrillEvidence:
    checks = [c.to_json() for c in report.checks]
    identity = next((c for c in checks if c.get("id") == "schema.identity"), None)
    document = report.to_json()
    return DrillEvidence(
        backup_id=report.backup,
        location=located.storage if located else None,
        manifest_sha256=_manifest_sha256(located, storages),
        subjects=_subjects(report, located),
        verdict=report.verdict,
        checks=checks,
        database={
            "newest_verified_key": report.db_aggregate_key,
            **(report.dkg_newest or {}),
        },
        chain={
            "key": report.onchain_aggregate_key,  # a chain reading only
            "expected_key": report.expected_aggregate_key,  # --expected-key, given by hand
            "key_source": report.key_source,
            "endpoints": report.chain_endpoints,
            "tip": _tip(settings, answered_urls),
        },
        schema_identity=identity,
        timings=document.get("timings", {}),
        budgets=document.get("budgets"),
        tool={"name": "sbtc-ops", "version": __version__, "lock_sha256": lock_digest()},
        host=host_name(),
        started_at=iso(window[0]),
        finished_at=iso(window[1]),
        extra={"sandbox": document.get("sandbox")},  # which isolation layers the drill had
    )


def _subjects(report: VerifyReport, located: LocatedBackup | None) -> list[Subject]:
    manifest = located.manifest if located else None
    checksum = next((c for c in report.checks if c.id == "archive.checksum"), None)
    if manifest is not None and checksum is not None and checksum.status.value == "pass":
        return [Subject(entry.path, entry.sha256) for entry in manifest.files]
    if located is None:
        return []
    root = located.root
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [
        Subject(p.name if p == root else p.relative_to(root).as_posix(), _sha256(p))
        for p in files
        if p.name != MANIFEST_NAME and store.DIRECTORY not in p.relative_to(root.parent).parts
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_sha256(located: LocatedBackup | None, storages: list[Storage]) -> str | None:
    if located is None or located.manifest is None:
        return None
    try:
        for storage in storages:
            if storage.name == located.storage and located.backup_id:
                return store.manifest_digest(storage, located.backup_id)
        path = located.root / MANIFEST_NAME if located.root.is_dir() else None
        if path is not None:
            return hashlib.sha256(read_capped(path, MAX_MANIFEST_BYTES)).hexdigest()
    except (StorageError, OSError, UnsafeFileError):
        return None
    return None


def _tip(settings: Settings, answered: list[str]) -> dict[str, Any] | None:
    """The Stacks tip one answering endpoint reports right after the key was read."""
    if not answered:
        return None
    shown = redact_url(answered[0])
    try:
        info = get_info(answered[0], settings)
    except StacksError as exc:
        return {"endpoint": shown, "error": str(exc)[:200]}
    return {
        "endpoint": shown,
        "height": info.get("stacks_tip_height"),
        "block_hash": info.get("stacks_tip"),
        "burn_block_height": info.get("burn_block_height"),
    }
