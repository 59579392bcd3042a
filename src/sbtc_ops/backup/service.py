"""Backup actions as the CLI and the daemon call them: settings in, plain results out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbtc_ops.backup.ids import backup_time
from sbtc_ops.backup.inuse import deleting
from sbtc_ops.backup.lock import is_locked
from sbtc_ops.backup.retention import RetentionPlan, RetentionPolicy, plan_retention
from sbtc_ops.backup.storage import (
    LocationMissing,
    Storage,
    StorageError,
    StoredBackup,
    configured_storages,
    storage_for,
)
from sbtc_ops.backup.take import BackupOutcome, BackupRequest, take_backup
from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.redact import scrub
from sbtc_ops.state import EventKind, StateStore


def storages_for(settings: Settings, locations: list[str] | None) -> list[Storage]:
    """`--repo` locations when given, else the configured local directory and S3 bucket."""
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
        # A driver's message may quote the connection string: scrubbed before it is kept.
        error = scrub(str(exc))
        _record(
            settings,
            "backup",
            "-",
            "error",
            {"error": error, "started_at": started, "kind": request.kind},
        )
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
            "failed_locations": outcome.failed,
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
    if backup.invalid is not None:
        return "invalid"
    if not backup.complete:
        return "incomplete"
    # A verify that could not run (verdict "error": chain unreachable, no binaries) says
    # nothing about the backup itself; nor does a mismatch with a key typed by hand
    # (--expected-key: a typo looks exactly like that).
    verdicts = [
        e
        for e in store.events(EventKind.VERIFY, backup.id, limit=20)
        if e.outcome != "error" and not _mismatch_by_hand(e.data)
    ]
    if not verdicts:
        return "complete"
    return "verified-ok" if verdicts[0].outcome == "ok" else "verified-failed"


def _mismatch_by_hand(data: dict[str, Any]) -> bool:
    return (
        data.get("expected_aggregate_key") is not None
        and data.get("verdict") == "mismatch"
        and data.get("failed_checks") == ["dkg.matches_chain"]
    )


@dataclass(frozen=True)
class Survey:
    """Every backup of the locations that could be listed, and why the others could not."""

    rows: list[dict[str, Any]]
    unreachable: dict[str, str]  # location → why it could not be listed


# Reads a backup's drill evidence (attest.service.evidence_reader): given by the caller, since
# the attestations live in a layer above this one.
EvidenceReader = Callable[[Storage, StoredBackup], dict[str, Any]]


def survey(
    settings: Settings,
    locations: list[str] | None,
    *,
    missing_is_empty: bool = False,
    evidence: EvidenceReader | None = None,
) -> Survey:
    """List what is reachable and name what is not; with nothing reachable, an error.
    `missing_is_empty`: a local directory that does not exist holds no backup (for the
    audit, whose finding is then "no backup"); elsewhere it is an error, never "empty".
    `evidence`: each row's `attestation` (None without it)."""
    storages = storages_for(settings, locations)
    rows: list[dict[str, Any]] = []
    unreachable: dict[str, str] = {}
    with StateStore.open(settings.state_dir) as store:
        for storage in storages:
            try:
                backups = storage.list_backups()
            except LocationMissing as exc:
                if not missing_is_empty:
                    unreachable[storage.name] = exc.message
                    continue
                backups = []
            except StorageError as exc:
                unreachable[storage.name] = exc.message
                continue
            rows.extend(_row(storage, backup, store, evidence) for backup in backups)
    if unreachable and len(unreachable) == len(storages):
        raise StorageError("; ".join(unreachable.values()))
    rows.sort(key=lambda row: (row["id"], row["storage"]), reverse=True)
    return Survey(rows, unreachable)


def list_all(
    settings: Settings, locations: list[str] | None, *, missing_is_empty: bool = False
) -> list[dict[str, Any]]:
    """Every backup of every location; an error if any location cannot be listed (for
    evidence that must be complete, e.g. the audit)."""
    found = survey(settings, locations, missing_is_empty=missing_is_empty)
    if found.unreachable:
        raise StorageError("; ".join(found.unreachable.values()))
    return found.rows


def _row(
    storage: Storage, backup: StoredBackup, store: StateStore, evidence: EvidenceReader | None
) -> dict[str, Any]:
    manifest = backup.manifest
    return {
        "id": backup.id,
        "age": _age(backup.id),
        "size": backup.size,
        "state": backup_state(backup, store),
        "reason": backup.invalid,
        "kind": manifest.kind if manifest else None,
        "location": backup.location,
        "storage": storage.name,
        "encrypted": manifest.encrypted if manifest else None,
        "newest_verified_aggregate_key": manifest.newest_verified_aggregate_key
        if manifest
        else None,
        "dkg_keys": [k.model_dump() for k in manifest.dkg_keys] if manifest else [],
        "attestation": evidence(storage, backup) if evidence is not None else None,
    }


def prune_all(
    settings: Settings, locations: list[str] | None, *, dry_run: bool
) -> list[dict[str, Any]]:
    """Retention per storage, on the storages that can be listed (each one's retention is
    its own); one that cannot is reported (an entry with `error`) and nothing is deleted
    there. With none listed, an error."""
    policy = RetentionPolicy(**settings.backup.retention.model_dump())
    storages = storages_for(settings, locations)
    # A backup being written right now is incomplete too: leave those alone while one runs.
    backup_running = is_locked(settings.state_dir, "backup")
    listings: list[tuple[Storage, list[StoredBackup], list[str]]] = []
    unreachable: list[dict[str, Any]] = []
    for storage in storages:
        try:
            abandoned = [] if backup_running else storage.clean_abandoned(dry_run=True)
            listings.append((storage, storage.list_backups(), abandoned))
        except StorageError as exc:
            unreachable.append(_unreachable_entry(storage.name, exc.message))
    if not listings:
        messages = "; ".join(entry["error"] for entry in unreachable)
        raise StorageError(f"{messages}; nothing was deleted")
    with StateStore.open(settings.state_dir) as store:
        verified = {
            b.id
            for _, backups, _ in listings
            for b in backups
            if backup_state(b, store) == "verified-ok"
        }
        chain_event = store.last_event(EventKind.CHAIN_KEY)
    facts = _ProtectFacts(verified, chain_event.subject if chain_event else None)
    pruned = [
        _prune_one(
            settings.state_dir,
            storage,
            backups,
            abandoned,
            policy,
            facts,
            dry_run=dry_run,
            keep_incomplete=backup_running,
        )
        for storage, backups, abandoned in listings
    ]
    return pruned + unreachable


def _unreachable_entry(location: str, error: str) -> dict[str, Any]:
    """prune's report for a location it could not list: nothing done there."""
    return {
        "location": location,
        "error": error,
        "kept": {},
        "deleted": [],
        "incomplete_removed": [],
        "invalid_removed": [],
        "abandoned_uploads": [],
        "skipped_in_use": [],
        "decisions": [],
    }


@dataclass(frozen=True)
class _ProtectFacts:
    verified: set[str]  # ids whose last verify succeeded
    chain_key: str | None  # the newest on-chain aggregate key seen (hex)


def _key_holders(backups: list[StoredBackup], chain_key: str | None) -> list[str]:
    """Ids of backups whose manifest lists the current on-chain key's DKG shares."""
    if not chain_key:
        return []
    return [
        b.id
        for b in backups
        if b.manifest and any(k.aggregate_key == chain_key for k in b.manifest.dkg_keys)
    ]


def _plan_kind(
    backups: list[StoredBackup], kind: str, policy: RetentionPolicy, facts: _ProtectFacts
) -> RetentionPlan:
    complete = [b for b in backups if b.complete and b.manifest and b.manifest.kind == kind]
    holders = _key_holders(complete, facts.chain_key)
    protected = {}
    if holders:
        newest_holder = max(holders, key=backup_time)
        protected[newest_holder] = f"newest holding the on-chain key's shares ({facts.chain_key})"
    return plan_retention(
        [b.id for b in complete], policy, verified=facts.verified, protected=protected
    )


def _prune_one(
    state_dir: Path,
    storage: Storage,
    backups: list[StoredBackup],
    abandoned: list[str],
    policy: RetentionPolicy,
    facts: _ProtectFacts,
    *,
    dry_run: bool,
    keep_incomplete: bool,
) -> dict[str, Any]:
    deleted: list[str] = []
    kept: dict[str, list[str]] = {}
    why_deleted: dict[str, str] = {}
    for kind in ("full", "dkg-only"):
        plan = _plan_kind(backups, kind, policy, facts)
        kept.update(plan.keep)
        deleted.extend(plan.delete)
        why_deleted.update(plan.why_deleted)
    # An invalid backup (unreadable manifest) cannot be verified or restored by id: it goes
    # with the incomplete ones, reported apart so the operator sees why it went.
    unusable = [] if keep_incomplete else [b for b in backups if not b.complete]
    incomplete = [b.id for b in unusable if b.invalid is None]
    invalid = [b.id for b in unusable if b.invalid is not None]
    for backup_id in incomplete:
        why_deleted[backup_id] = "incomplete (a backup that did not finish)"
    for backup_id in invalid:
        why_deleted[backup_id] = "invalid (its manifest cannot be read)"
    if abandoned and not dry_run:
        storage.clean_abandoned(dry_run=False)
    in_use = _delete_unless_in_use(
        state_dir, storage, [*deleted, *incomplete, *invalid], dry_run=dry_run
    )
    if not dry_run:
        _record_deleted(state_dir, storage.name, [i for i in deleted if i not in in_use])
    for backup_id in in_use:
        # Kept this time; the next prune deletes it once the verify or restore is done.
        kept[backup_id] = ["in use by a running verify or restore"]
        why_deleted.pop(backup_id, None)
    return {
        "location": storage.name,
        "kept": kept,
        "deleted": sorted(i for i in deleted if i not in in_use),
        "incomplete_removed": sorted(i for i in incomplete if i not in in_use),
        "invalid_removed": sorted(i for i in invalid if i not in in_use),
        "abandoned_uploads": abandoned,
        "skipped_in_use": sorted(in_use),
        "decisions": _decisions(kept, why_deleted),
    }


def _delete_unless_in_use(
    state_dir: Path, storage: Storage, backup_ids: list[str], *, dry_run: bool
) -> list[str]:
    """Delete each backup under its exclusive lock (a dry run only tries the lock); returns
    those a verify or restore is reading, which are left alone."""
    in_use = []
    for backup_id in backup_ids:
        with deleting(state_dir, storage.name, backup_id) as free:
            if not free:
                in_use.append(backup_id)
            elif not dry_run:
                storage.delete(backup_id)
    return in_use


def _record_deleted(state_dir: Path, location: str, backup_ids: list[str]) -> None:
    """So the status page and history show only backups that still exist."""
    if not backup_ids:
        return
    with StateStore.open(state_dir) as store:
        for backup_id in backup_ids:
            store.record_event(EventKind.BACKUP_DELETED, backup_id, "ok", {"location": location})


def _decisions(kept: dict[str, list[str]], why_deleted: dict[str, str]) -> list[dict[str, Any]]:
    """One line per backup, newest first: what prune does with it and why."""
    rows = [{"id": i, "action": "keep", "reasons": reasons} for i, reasons in kept.items()]
    rows += [{"id": i, "action": "delete", "reasons": [why]} for i, why in why_deleted.items()]
    return sorted(rows, key=lambda row: str(row["id"]), reverse=True)


def local_path_or_none(path_text: str) -> Path | None:
    path = Path(path_text)
    return path if path.exists() else None
