"""`sbtc-ops backup`: a consistent, checksummed, optionally encrypted dump of the signer DB.

Order of work, chosen so a failure at any point leaves no complete-looking artifact and never
touches an earlier backup: check the destinations → take the lock → open a snapshot → pg_dump
(with the snapshot) into `<id>.partial/` while the manifest facts are read from the same
snapshot → checksums → fsync + rename → manifest last → copy to the other storages.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from sbtc_ops import __version__
from sbtc_ops.backup.docker_dump import find_container_dumper
from sbtc_ops.backup.dump import Dumper, DumpJob, DumpOptions, LocalDumper
from sbtc_ops.backup.ids import new_backup_id
from sbtc_ops.backup.lock import exclusive_lock
from sbtc_ops.backup.manifest import (
    DkgKeyInfo,
    EncryptionInfo,
    FileEntry,
    Manifest,
    SourceInfo,
    file_entries,
)
from sbtc_ops.backup.source import (
    MIGRATIONS_TABLE,
    SIGNER_SCHEMA,
    SourceFacts,
    parse_target,
    snapshot_session,
)
from sbtc_ops.backup.storage import LocalStorage, Storage, StorageError
from sbtc_ops.errors import describe_os_error
from sbtc_ops.files import PRIVATE_DIR_MODE
from sbtc_ops.pg.binaries import find_binaries
from sbtc_ops.progress import byte_progress, shown, step
from sbtc_ops.results import Stopwatch
from sbtc_ops.state import StateStore
from sbtc_ops.statedir import make_state_subdir

log = logging.getLogger(__name__)

DKG_TABLE = f"{SIGNER_SCHEMA}.dkg_shares"

STAGING_SUBDIR = "staging"  # under the state directory: a backup being written


@dataclass(frozen=True, kw_only=True)
class BackupRequest:
    """One backup to take. No defaults of its own: the values come from the settings
    (backup.service.request_from_settings), whose model is the only place defaults live."""

    db_url: SecretStr
    storages: list[Storage]
    state_dir: Path
    network: str
    deployer: str
    format: str
    compression: str
    jobs: int
    recipients: list[str]
    kind: str  # "full" | "dkg-only"
    bin_dir: Path | None
    docker_container: str | None = None  # pg_dump runs inside it (backup/docker_dump.py)


@dataclass(frozen=True)
class BackupOutcome:
    manifest: Manifest
    locations: list[str]  # where the backup was stored
    failed: dict[str, str] = field(default_factory=dict)  # location → why it is not there


def _now() -> datetime:
    return datetime.now(UTC)


def _unique_id(
    storages: list[Storage], kind: str, failed: dict[str, str]
) -> tuple[str, list[Storage]]:
    """A new id (UTC second) used by no backup in any storage (a backup that reused one,
    even in S3 only, would overwrite the earlier backup's objects), and the storages that
    could be listed: one that cannot is reported in `failed` and left out."""
    suffix = "dkg" if kind == "dkg-only" else None
    existing: set[str] = set()
    listed = []
    for storage in storages:
        try:
            existing |= storage.backup_ids()
            listed.append(storage)
        except StorageError as exc:
            _location_failed(failed, storage, exc)
    if not listed:
        raise StorageError("no backup location is reachable: " + "; ".join(failed.values()))
    backup_id = new_backup_id(suffix=suffix)
    while backup_id in existing:
        time.sleep(1.0)
        backup_id = new_backup_id(suffix=suffix)
    return backup_id, listed


def _location_failed(failed: dict[str, str], storage: Storage, exc: StorageError) -> None:
    failed[storage.name] = exc.message
    log.warning("%s", exc.message)


def _reachable(storages: list[Storage]) -> tuple[list[Storage], dict[str, str]]:
    """The storages that can take a backup now; the others, with why. One location that
    fails never costs the others their backup; with none reachable there is no backup."""
    reachable: list[Storage] = []
    failed: dict[str, str] = {}
    for storage in storages:
        try:
            storage.check_writable()
            reachable.append(storage)
        except StorageError as exc:
            if len(storages) == 1:
                raise
            _location_failed(failed, storage, exc)
    if not reachable:
        raise StorageError("no backup location is reachable: " + "; ".join(failed.values()))
    return reachable, failed


def take_backup(request: BackupRequest) -> BackupOutcome:
    reachable, failed = _reachable(request.storages)
    with exclusive_lock(request.state_dir, "backup"):
        try:
            return _take_locked(replace(request, storages=reachable), failed)
        except OSError as exc:
            # Disk full, an I/O error, a closed pipe while writing our own files (pg_dump's
            # own failures are DependencyErrors already); the partial files are gone.
            raise StorageError(
                f"backup failed: {describe_os_error(exc)}; its partial files were removed"
            ) from None


@dataclass(frozen=True)
class Dumped:
    """What the dump phase leaves for the manifest."""

    facts: SourceFacts  # read in the dump's snapshot
    dump_version: str
    source: dict[str, object]  # the server, as the manifest describes it (no secret)
    snapshot: str
    options: DumpOptions
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds


@contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """A named progress step, its duration recorded in `phases`."""
    with step(name):
        watch = Stopwatch()
        yield
        phases[name] = watch.elapsed()


def _take_locked(request: BackupRequest, failed: dict[str, str]) -> BackupOutcome:
    started = _now()
    backup_id, storages = _unique_id(request.storages, request.kind, failed)
    request = replace(request, storages=storages)
    primary = next((s for s in request.storages if isinstance(s, LocalStorage)), None)
    with _work_dir(request, primary, backup_id) as work_dir:
        dumped = _dump_in_snapshot(request, backup_id, work_dir, primary)
        _record_schema(request.state_dir, dumped.facts, backup_id)
        with _phase(dumped.phases, "checksums"):
            files = _checksums(work_dir)
        log.info(
            "dumped %d file(s), %d bytes, checksums taken", len(files), sum(f.size for f in files)
        )
        manifest = _manifest(request, backup_id, started, dumped, files)
        with _phase(manifest.phases_s, "store"):
            locations = _store_everywhere(request, primary, backup_id, work_dir, manifest, failed)
        log.info("backup %s complete at %s", backup_id, ", ".join(locations))
    return BackupOutcome(manifest, locations, failed)


@contextmanager
def _work_dir(
    request: BackupRequest, primary: LocalStorage | None, backup_id: str
) -> Iterator[Path]:
    """Where the backup is written: the local storage's partial directory, else a staging
    directory under the state dir (removed afterwards). On failure nothing partial stays."""
    staging_root: Path | None = None
    if primary is not None:
        work_dir = primary.begin(backup_id)
    else:
        staging_root = Path(
            tempfile.mkdtemp(prefix="sbtc-ops-staging-", dir=_staging_parent(request))
        )
        work_dir = staging_root / backup_id
        work_dir.mkdir(mode=PRIVATE_DIR_MODE)
    try:
        yield work_dir
    except BaseException:
        log.info("backup %s failed; removing its partial files", backup_id)
        if primary is not None:
            primary.abort(backup_id)
        raise
    finally:
        if staging_root is not None:
            shutil.rmtree(staging_root, ignore_errors=True)


def _dump_in_snapshot(
    request: BackupRequest, backup_id: str, work_dir: Path, primary: LocalStorage | None
) -> Dumped:
    """pg_dump with an exported snapshot while the manifest's facts are read from it."""
    target = parse_target(request.db_url)
    log.info("backup %s of %s into %s", backup_id, target.shown, work_dir)
    with snapshot_session(target) as session:
        facts = session.begin()
        # pg_dump must reach the server that exported the snapshot (multi-host URLs).
        target = target.pinned_to(session.conn)
        log.info(
            "snapshot %s exported (server %s, %d tables)",
            session.snapshot_id,
            facts.server_version,
            len(facts.tables),
        )
        dumper = _dumper(request, facts)
        options = DumpOptions(
            format=request.format
            if request.kind == "full" and dumper.writes_directories
            else "custom",
            compression=request.compression,
            jobs=request.jobs,
            snapshot=session.snapshot_id,
            exclude_table_data=_excluded_data(request.kind, facts),
        )
        expected = _expected_size(primary, request.kind) if shown() else None
        job = DumpJob(target, options, work_dir, request.recipients, expected)
        phases: dict[str, float] = {}
        with ThreadPoolExecutor(max_workers=1) as pool, _phase(phases, "dump"):
            # The facts are read from the same snapshot while pg_dump runs.
            facts_future = pool.submit(session.read_facts, _tables_to_count(request.kind, facts))
            dumper.dump(job)
            facts = facts_future.result()
    return Dumped(facts, dumper.version, target.describe(), session.snapshot_id, options, phases)


def _record_schema(state_dir: Path, facts: SourceFacts, backup_id: str) -> None:
    """The live schema at this migration level, read in the dump's snapshot, becomes the
    reference restored copies of it are compared with (verify/reference.py)."""
    if facts.schema is None or not facts.migrations:
        return
    with StateStore.open(state_dir) as store:
        if store.record_schema_reference(
            facts.migrations, facts.schema.digest, facts.schema.to_json(), f"backup {backup_id}"
        ):
            log.info("schema reference recorded: digest %s", facts.schema.digest)


def _dumper(request: BackupRequest, facts: SourceFacts) -> Dumper:
    """The host's pg_dump, or the DB container's own."""
    if request.docker_container:
        return find_container_dumper(request.docker_container, facts.server_major)
    return LocalDumper(
        find_binaries(
            request.bin_dir, min_major=facts.server_major, tool_hint="pg_dump", need=("pg_dump",)
        )
    )


def _staging_parent(request: BackupRequest) -> Path:
    parent = make_state_subdir(request.state_dir, STAGING_SUBDIR)
    # We hold the backup lock: anything still here was left by a backup that was killed.
    for stale in parent.iterdir():
        log.info("removing %s, left by an interrupted backup", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return parent


def _tables_to_count(kind: str, facts: SourceFacts) -> list[str]:
    if kind == "dkg-only":
        return [t for t in facts.tables if t in (DKG_TABLE, MIGRATIONS_TABLE)]
    return list(facts.tables)


def _excluded_data(kind: str, facts: SourceFacts) -> tuple[str, ...]:
    """A DKG-only export keeps the whole schema but the data of dkg_shares and migrations."""
    if kind != "dkg-only":
        return ()
    return tuple(t for t in facts.tables if t not in (DKG_TABLE, MIGRATIONS_TABLE))


def _expected_size(primary: LocalStorage | None, kind: str) -> int | None:
    """The newest earlier backup's size of the same kind: the estimate behind the dump's
    progress bar and ETA (a signer database grows slowly from one day to the next)."""
    if primary is None:
        return None
    wanted = "dkg-only" if kind == "dkg-only" else "full"
    earlier = [
        b for b in primary.list_backups() if b.complete and b.manifest and b.manifest.kind == wanted
    ]
    newest = max(earlier, key=lambda b: b.id, default=None)
    return newest.manifest.total_size if newest and newest.manifest else None


def _checksums(work_dir: Path) -> list[FileEntry]:
    return file_entries(work_dir, (p for p in work_dir.rglob("*") if p.is_file()))


def _manifest(
    request: BackupRequest,
    backup_id: str,
    started: datetime,
    dumped: Dumped,
    files: list[FileEntry],
) -> Manifest:
    ended = _now()
    facts, options = dumped.facts, dumped.options
    migrations = facts.migrations
    return Manifest(
        id=backup_id,
        kind="dkg-only" if request.kind == "dkg-only" else "full",
        started_at=started.isoformat(),
        ended_at=ended.isoformat(),
        duration_s=round((ended - started).total_seconds(), 3),
        source=SourceInfo.model_validate(dumped.source),
        server_version=facts.server_version,
        pg_dump_version=dumped.dump_version,
        format="custom" if options.format == "custom" else "directory",
        compression=options.compression,
        files=files,
        total_size=sum(f.size for f in files),
        rows=dict(facts.rows),
        migrations=migrations,
        newest_migration=migrations[-1] if migrations else None,
        newest_verified_aggregate_key=facts.newest_verified_key,
        dkg_keys=[
            DkgKeyInfo(aggregate_key=k.aggregate_key, status=k.status, created_at=k.created_at)
            for k in facts.dkg_keys
        ],
        network=request.network,
        deployer=request.deployer,
        encryption=EncryptionInfo(recipients=list(request.recipients))
        if request.recipients
        else None,
        sbtc_ops_version=__version__,
        snapshot=dumped.snapshot,
        phases_s={k: round(v, 3) for k, v in dumped.phases.items()},
    )


def _store_everywhere(
    request: BackupRequest,
    primary: LocalStorage | None,
    backup_id: str,
    work_dir: Path,
    manifest: Manifest,
    failed: dict[str, str],
) -> list[str]:
    """Commit the local copy, then upload to each other storage; a storage that fails is
    recorded in `failed` and the others still get their copy."""
    locations = []
    if primary is not None:
        final = primary.commit(backup_id, manifest)
        locations.append(str(final))
        source_dir = final
    else:
        source_dir = work_dir
    for storage in request.storages:
        if storage is primary:
            continue
        try:
            with byte_progress(f"upload to {storage.name}", total=manifest.total_size) as advance:
                storage.store(backup_id, source_dir, manifest, advance)
        except StorageError as exc:
            _location_failed(failed, storage, exc)
            continue
        locations.append(f"{storage.name}/{backup_id}")
    if not locations:
        raise StorageError(
            f"backup {backup_id} could not be stored anywhere: " + "; ".join(failed.values())
        )
    return locations
