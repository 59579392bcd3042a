"""Backup actions as the CLI and the daemon call them: settings in, plain results out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbtc_ops.backup.ids import backup_time
from sbtc_ops.backup.lock import is_locked
from sbtc_ops.backup.retention import RetentionPolicy, plan_retention
from sbtc_ops.backup.storage import (
    Storage,
    StorageError,
    StoredBackup,
    configured_storages,
    storage_for,
)
from sbtc_ops.backup.take import BackupOutcome, BackupRequest, take_backup
from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.state import StateStore


def storages_for(settings: Settings, locations: list[str] | None) -> list[Storage]:
    """`--to` locations when given, else the configured local directory and S3 bucket."""
    if locations:
        return [storage_for(location, settings.backup.s3) for location in locations]
    return configured_storages(
        settings.backup.local_dir, settings.backup.s3.url, settings.backup.s3
    )


def request_from_settings(
    settings: Settings, locations: list[str] | None, *, dkg_only: bool = False
) -> BackupRequest:
    db_url = settings.effective_db_url
    if db_url is None:
        raise ConfigError(
            "no signer database configured",
            hint="pass --db URL, set db.url in sbtc-ops.toml, or point signer.config_path at "
            "the signer's signer-config.toml (its db_endpoint is used)",
        )
    return BackupRequest(
        db_url=db_url,
        storages=storages_for(settings, locations),
        state_dir=settings.state_dir,
        network=settings.network,
        deployer=settings.effective_deployer,
        format=settings.backup.format,
        compression=settings.backup.compression,
        jobs=settings.backup.jobs,
        recipients=list(settings.backup.recipients),
        kind="dkg-only" if dkg_only else "full",
        bin_dir=settings.postgres.bin_dir,
        # The container path only for the signer's own DB (not a --db / db.url override).
        docker_container=settings.docker.db_container if settings.db.url is None else None,
    )


def run_backup(settings: Settings, request: BackupRequest) -> BackupOutcome:
    """Take a backup and record its outcome in the state database."""
    started = time.time()
    try:
        outcome = take_backup(request)
    except Exception as exc:
        _record(settings, "backup", "-", "error", {"error": str(exc), "started_at": started})
        raise
    manifest = outcome.manifest
    _record(
        settings,
        "backup",
        manifest.id,
        "ok",
        {
            "kind": manifest.kind,
            "size": manifest.total_size,
            "duration_s": manifest.duration_s,
            "newest_verified_aggregate_key": manifest.newest_verified_aggregate_key,
            "locations": outcome.locations,
            "dkg_created_at": manifest.dkg_keys[0].created_at if manifest.dkg_keys else None,
        },
    )
    return outcome


def _record(
    settings: Settings, kind: str, subject: str, outcome: str, data: dict[str, Any]
) -> None:
    with StateStore.open(settings.state_dir) as store:
        store.record_event(kind, subject, outcome, data)


def _age(backup_id: str) -> str:
    seconds = (datetime.now(UTC) - backup_time(backup_id)).total_seconds()
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def backup_state(backup: StoredBackup, store: StateStore) -> str:
    if not backup.complete:
        return "incomplete"
    # A verify that could not run (verdict "error": chain unreachable, no binaries) says
    # nothing about the backup itself.
    verdicts = [e for e in store.events("verify", backup.id, limit=20) if e.outcome != "error"]
    if not verdicts:
        return "complete"
    return "verified-ok" if verdicts[0].outcome == "ok" else "verified-failed"


def list_all(settings: Settings, locations: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    with StateStore.open(settings.state_dir) as store:
        for storage in storages_for(settings, locations):
            for backup in storage.list_backups():
                manifest = backup.manifest
                rows.append(
                    {
                        "id": backup.id,
                        "age": _age(backup.id),
                        "size": backup.size,
                        "state": backup_state(backup, store),
                        "kind": manifest.kind if manifest else None,
                        "location": backup.location,
                        "storage": storage.name,
                        "encrypted": manifest.encrypted if manifest else None,
                        "newest_verified_aggregate_key": manifest.newest_verified_aggregate_key
                        if manifest
                        else None,
                        "dkg_keys": [k.model_dump() for k in manifest.dkg_keys] if manifest else [],
                    }
                )
    rows.sort(key=lambda row: (row["id"], row["storage"]), reverse=True)
    return rows


def prune_all(
    settings: Settings, locations: list[str] | None, *, dry_run: bool
) -> list[dict[str, Any]]:
    """Retention per storage. Listing every storage comes first: if any listing fails,
    nothing at all is deleted."""
    policy = RetentionPolicy(**settings.backup.retention.model_dump())
    storages = storages_for(settings, locations)
    # A backup being written right now is incomplete too: leave those alone while one runs.
    backup_running = is_locked(settings.state_dir, "backup")
    listings: list[tuple[Storage, list[StoredBackup], list[str]]] = []
    for storage in storages:
        try:
            abandoned = [] if backup_running else storage.clean_abandoned(dry_run=True)
            listings.append((storage, storage.list_backups(), abandoned))
        except StorageError as exc:
            raise StorageError(f"{exc.message}; nothing was deleted") from None
    return [
        _prune_one(
            storage,
            backups,
            abandoned,
            policy,
            dry_run=dry_run,
            keep_incomplete=backup_running,
        )
        for storage, backups, abandoned in listings
    ]


def _prune_one(
    storage: Storage,
    backups: list[StoredBackup],
    abandoned: list[str],
    policy: RetentionPolicy,
    *,
    dry_run: bool,
    keep_incomplete: bool,
) -> dict[str, Any]:
    deleted: list[str] = []
    kept: dict[str, list[str]] = {}
    for kind in ("full", "dkg-only"):
        complete = [b.id for b in backups if b.complete and b.manifest and b.manifest.kind == kind]
        plan = plan_retention(complete, policy)
        kept.update(plan.keep)
        deleted.extend(plan.delete)
    incomplete = [] if keep_incomplete else [b.id for b in backups if not b.complete]
    if not dry_run:
        if abandoned:
            storage.clean_abandoned(dry_run=False)
        for backup_id in [*deleted, *incomplete]:
            storage.delete(backup_id)
    return {
        "location": storage.name,
        "kept": kept,
        "deleted": sorted(deleted),
        "incomplete_removed": sorted(incomplete),
        "abandoned_uploads": abandoned,
    }


def local_path_or_none(path_text: str) -> Path | None:
    path = Path(path_text)
    return path if path.exists() else None
