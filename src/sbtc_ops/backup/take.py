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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from sbtc_ops import __version__
from sbtc_ops.backup.crypto import AGE_SUFFIX, encrypt_stream
from sbtc_ops.backup.dump import (
    ARCHIVE_NAME,
    DIRECTORY_NAME,
    DumpOptions,
    dump_encrypted,
    dump_to_path,
    pg_dump_argv,
)
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
    ConnectionTarget,
    SourceFacts,
    parse_target,
    snapshot_session,
)
from sbtc_ops.backup.storage import LocalStorage, Storage, StorageError
from sbtc_ops.errors import describe_os_error
from sbtc_ops.pg.binaries import PgBinaries, find_binaries
from sbtc_ops.pg.libpq import ClientInvocation, client_invocation
from sbtc_ops.progress import byte_progress, shown, step, watch_growth
from sbtc_ops.state import StateStore
from sbtc_ops.statedir import make_state_subdir

log = logging.getLogger(__name__)

DKG_TABLE = f"{SIGNER_SCHEMA}.dkg_shares"


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


def _take_locked(request: BackupRequest, failed: dict[str, str]) -> BackupOutcome:
    started = _now()
    phases: dict[str, float] = {}
    backup_id, storages = _unique_id(request.storages, request.kind, failed)
    request = replace(request, storages=storages)
    primary = next((s for s in request.storages if isinstance(s, LocalStorage)), None)
    staging_root: Path | None = None
    if primary is not None:
        work_dir = primary.begin(backup_id)
    else:
        staging_root = Path(
            tempfile.mkdtemp(prefix="sbtc-ops-staging-", dir=_staging_parent(request))
        )
        work_dir = staging_root / backup_id
        work_dir.mkdir(mode=0o700)
    try:
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
            binaries = _binaries(request, facts)
            count_tables = _tables_to_count(request.kind, facts)
            options = DumpOptions(
                # One stream out of a container: custom format there.
                format=request.format
                if request.kind == "full" and not request.docker_container
                else "custom",
                compression=request.compression,
                jobs=request.jobs,
                snapshot=session.snapshot_id,
                exclude_table_data=_excluded_data(request.kind, facts),
            )
            t0 = time.perf_counter()
            expected = _expected_size(primary, request.kind) if shown() else None
            with ThreadPoolExecutor(max_workers=1) as pool, step("dump"):
                # The facts are read from the same snapshot while pg_dump runs.
                facts_future = pool.submit(session.read_facts, count_tables)
                if isinstance(binaries, tuple):
                    _run_container_dump(request, binaries, target, options, work_dir)
                else:
                    with client_invocation(target.client) as invocation:
                        _run_dump(
                            binaries,
                            target,
                            invocation,
                            options,
                            work_dir,
                            request.recipients,
                            expected,
                        )
                facts = facts_future.result()
            phases["dump"] = time.perf_counter() - t0
            dump_version = binaries[1] if isinstance(binaries, tuple) else binaries.version
        _record_schema(request.state_dir, facts, backup_id)
        t0 = time.perf_counter()
        with step("checksums"):
            files = _checksums(work_dir)
        phases["checksums"] = time.perf_counter() - t0
        log.info(
            "dumped %d file(s), %d bytes, checksums taken", len(files), sum(f.size for f in files)
        )
        manifest = _manifest(
            request,
            backup_id,
            started,
            facts,
            files,
            dump_version,
            target.describe(),
            session.snapshot_id,
            options,
            phases,
        )
        t0 = time.perf_counter()
        with step("store"):
            locations = _store_everywhere(request, primary, backup_id, work_dir, manifest, failed)
        manifest.phases_s["store"] = time.perf_counter() - t0
        log.info("backup %s complete at %s", backup_id, ", ".join(locations))
    except BaseException:
        log.info("backup %s failed; removing its partial files", backup_id)
        if primary is not None:
            primary.abort(backup_id)
        raise
    finally:
        if staging_root is not None:
            shutil.rmtree(staging_root, ignore_errors=True)
    return BackupOutcome(manifest, locations, failed)


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


def _binaries(request: BackupRequest, facts: SourceFacts) -> PgBinaries | tuple[str, str]:
    """The host's pg_dump, or (path, version) of the DB container's own pg_dump."""
    if request.docker_container:
        from sbtc_ops.backup.docker_dump import container_pg_dump

        return container_pg_dump(request.docker_container, facts.server_major)
    return find_binaries(
        request.bin_dir, min_major=facts.server_major, tool_hint="pg_dump", need=("pg_dump",)
    )


def _run_container_dump(
    request: BackupRequest,
    pg_dump: tuple[str, str],
    target: ConnectionTarget,
    options: DumpOptions,
    work_dir: Path,
) -> None:
    from sbtc_ops.backup.docker_dump import dump_through_container

    assert request.docker_container is not None
    name = ARCHIVE_NAME + (AGE_SUFFIX if request.recipients else "")
    output = work_dir / name
    with watch_growth(f"docker exec {request.docker_container} pg_dump", output):
        dump_through_container(
            request.docker_container, pg_dump, target, options, output, request.recipients
        )


def _staging_parent(request: BackupRequest) -> Path:
    parent = make_state_subdir(request.state_dir, "staging")
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


def _run_dump(
    binaries: PgBinaries,
    target: ConnectionTarget,
    invocation: ClientInvocation,
    options: DumpOptions,
    work_dir: Path,
    recipients: list[str],
    expected: int | None = None,
) -> None:
    conninfo, env = invocation.conninfo, invocation.env
    if options.format == "directory":
        out_dir = work_dir / DIRECTORY_NAME
        with watch_growth("pg_dump", out_dir, expected):
            dump_to_path(pg_dump_argv(binaries, conninfo, options, out_dir), target, env)
        for path in out_dir.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        if recipients:
            _encrypt_tree(out_dir, recipients)
        return
    if recipients:
        output = work_dir / (ARCHIVE_NAME + AGE_SUFFIX)
        with watch_growth("pg_dump | age", output, expected):
            dump_encrypted(
                pg_dump_argv(binaries, conninfo, options, None), target, env, output, recipients
            )
        return
    output = work_dir / ARCHIVE_NAME
    with watch_growth("pg_dump", output, expected):
        dump_to_path(pg_dump_argv(binaries, conninfo, options, output), target, env)
    output.chmod(0o600)


def _encrypt_tree(root: Path, recipients: list[str]) -> None:
    """Directory format: each file is encrypted on its own, the clear copy removed at once."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        encrypted = path.with_name(path.name + AGE_SUFFIX)
        with path.open("rb") as reader, encrypted.open("wb") as writer:
            encrypted.chmod(0o600)
            encrypt_stream(reader, writer, recipients)
        path.unlink()


def _checksums(work_dir: Path) -> list[FileEntry]:
    return file_entries(work_dir, (p for p in work_dir.rglob("*") if p.is_file()))


def _manifest(
    request: BackupRequest,
    backup_id: str,
    started: datetime,
    facts: SourceFacts,
    files: list[FileEntry],
    dump_version: str,
    source: dict[str, object],
    snapshot: str,
    options: DumpOptions,
    phases: dict[str, float],
) -> Manifest:
    ended = _now()
    migrations = facts.migrations
    return Manifest(
        id=backup_id,
        kind="dkg-only" if request.kind == "dkg-only" else "full",
        started_at=started.isoformat(),
        ended_at=ended.isoformat(),
        duration_s=round((ended - started).total_seconds(), 3),
        source=SourceInfo.model_validate(source),
        server_version=facts.server_version,
        pg_dump_version=dump_version,
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
        snapshot=snapshot,
        phases_s={k: round(v, 3) for k, v in phases.items()},
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
