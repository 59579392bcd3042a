"""Attestation files beside the backup they are about: `<backup>/attestations/` in a local
directory, the same keys under the backup's prefix in S3. Files are only ever added (never
overwritten); their names are checked on the way in and out (S3 listings are hostile)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    member_parts,
    sha256_capped,
)
from sbtc_ops.backup.storage import LocalStorage, S3Storage, Storage, StorageError
from sbtc_ops.errors import UsageError
from sbtc_ops.files import (
    PRIVATE_DIR_MODE,
    confined_path,
    create_private,
    fsync_dir,
    read_capped,
    write_all,
)

DIRECTORY = "attestations"
STATEMENT_SUFFIX = ".intoto.json"
# drill-20261206T051234Z-0123456789ab.intoto.json[.sig | .cosig-20261206T061234Z-0123abcd.sig]
NAME = re.compile(
    r"drill-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}\.intoto\.json"
    r"(?:\.sig|\.cosig-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\.sig)?"
)
MAX_LISTED = 10_000


def valid_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def _check(backup_id: str, name: str) -> None:
    if not is_backup_id(backup_id) or not valid_name(name):
        raise UsageError(f"not an attestation file name: {backup_id}/{name}")


def put(storage: Storage, backup_id: str, name: str, data: bytes) -> str:
    """Add one file; an existing one of that name is never replaced. Returns where it went."""
    _check(backup_id, name)
    if isinstance(storage, LocalStorage):
        directory = storage.root / backup_id / DIRECTORY
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        path = directory / name
        try:
            fd = create_private(path)  # O_EXCL: never overwrites
        except FileExistsError:
            raise StorageError(f"{path} exists already: attestations are never replaced") from None
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(directory)
        return str(path)
    if isinstance(storage, S3Storage):
        key = storage.key(backup_id, DIRECTORY, name)
        storage.put_new(key, data)
        return f"{storage.url}/{key}"
    raise StorageError(f"{storage.name}: attestations are not supported there")


def names(storage: Storage, backup_id: str) -> list[str]:
    """The attestation files of a backup (valid names only, sorted)."""
    if not is_backup_id(backup_id):
        raise UsageError(f"{backup_id!r} is not a backup id")
    found: list[str] = []
    if isinstance(storage, LocalStorage):
        directory = storage.root / backup_id / DIRECTORY
        if directory.is_dir() and not directory.is_symlink():
            found = [p.name for p in directory.iterdir() if p.is_file() and not p.is_symlink()]
    elif isinstance(storage, S3Storage):
        found = storage.object_names(storage.key(backup_id, DIRECTORY) + "/", MAX_LISTED)
    return sorted(n for n in found[:MAX_LISTED] if valid_name(n))


def read(storage: Storage, backup_id: str, name: str, max_bytes: int) -> bytes:
    _check(backup_id, name)
    if isinstance(storage, LocalStorage):
        return read_capped(storage.root / backup_id / DIRECTORY / name, max_bytes)
    if isinstance(storage, S3Storage):
        return storage.read_object(storage.key(backup_id, DIRECTORY, name), max_bytes)
    raise StorageError(f"{storage.name}: attestations are not supported there")


def manifest_digest(storage: Storage, backup_id: str) -> str:
    """SHA-256 of the manifest's bytes as stored."""
    if isinstance(storage, LocalStorage):
        data = read_capped(storage.root / backup_id / MANIFEST_NAME, MAX_MANIFEST_BYTES)
    elif isinstance(storage, S3Storage):
        data = storage.read_object(storage.key(backup_id, MANIFEST_NAME), MAX_MANIFEST_BYTES)
    else:
        raise StorageError(f"{storage.name}: not supported")
    return hashlib.sha256(data).hexdigest()


def file_digest(storage: Storage, backup_id: str, name: str, max_bytes: int) -> str | None:
    """SHA-256 of one archive file as the repository holds it now (None: missing, or larger
    than `max_bytes`, the size its manifest records)."""
    parts = member_parts(name)
    if isinstance(storage, LocalStorage):
        path = confined_path(storage.root / backup_id, parts)
        try:
            with path.open("rb") as handle:
                return sha256_capped(handle, max_bytes)
        except OSError:
            return None
    if isinstance(storage, S3Storage):
        try:
            return storage.object_digest(storage.key(backup_id, *parts), max_bytes)
        except StorageError:
            return None
    return None


def local_backup_of(statement_path: Path) -> tuple[LocalStorage, str] | None:
    """For a statement file at `<root>/<id>/attestations/NAME`: its storage and backup id."""
    resolved = statement_path.resolve()
    if resolved.parent.name != DIRECTORY or not is_backup_id(resolved.parent.parent.name):
        return None
    return LocalStorage(resolved.parent.parent.parent), resolved.parent.parent.name
