"""The manifest written beside every backup: what was dumped, from where, and its checksums.

A backup is complete exactly when its manifest exists; the manifest is written last.
It never holds a secret: source host/port/db/user only, recipients' public parts only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.errors import SbtcOpsError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
HASH_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20  # a manifest of a real backup is a few kB
MAX_MEMBER_DEPTH = 2  # "signer.dump", or "signer.dir/toc.dat" for directory-format dumps
_MEMBER_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def member_parts(name: str) -> tuple[str, ...]:
    """The components of a file name a manifest gives, or ValueError when it could leave the
    backup's directory or name something odd: an absolute path, `..`, an empty component, a
    NUL, a hidden file, more than MAX_MEMBER_DEPTH levels. A manifest is hostile input."""
    parts = tuple(name.split("/"))
    if len(parts) > MAX_MEMBER_DEPTH or not all(_MEMBER_PART.fullmatch(p) for p in parts):
        raise ValueError(f"unsafe file name {name!r} in manifest")
    return parts


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str  # relative to the backup directory, '/'-separated
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        member_parts(value)
        return value


class SourceInfo(BaseModel):
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None


class DkgKeyInfo(BaseModel):
    aggregate_key: str
    status: str
    created_at: str


class EncryptionInfo(BaseModel):
    scheme: Literal["age"] = "age"
    recipients: list[str]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    manifest_version: int = MANIFEST_VERSION
    id: str
    kind: Literal["full", "dkg-only"] = "full"
    started_at: str
    ended_at: str
    duration_s: float
    source: SourceInfo
    server_version: str
    pg_dump_version: str
    format: Literal["custom", "directory", "plain"]
    compression: str
    files: list[FileEntry]
    total_size: int
    rows: dict[str, int]
    migrations: list[str]
    newest_migration: str | None = None
    newest_verified_aggregate_key: str | None = None
    dkg_keys: list[DkgKeyInfo] = Field(default_factory=list)
    network: str
    deployer: str
    encryption: EncryptionInfo | None = None
    sbtc_ops_version: str
    snapshot: str | None = None
    phases_s: dict[str, float] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _backup_id(cls, value: str) -> str:
        # The id is shown first in every report and names directories: nothing but an id.
        if not is_backup_id(value):
            raise ValueError(f"id {value[:40]!r} is not a backup id (e.g. 20261124T220102Z)")
        return value

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise SbtcOpsError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes: not a manifest")
        try:
            return cls.model_validate(json.loads(data))
        except (ValueError, ValidationError) as exc:
            raise SbtcOpsError(
                f"{where}: not a valid sbtc-ops manifest: {_first_line(exc)}"
            ) from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def sha256_capped(stream: Readable, max_bytes: int) -> str | None:
    """SHA-256 of what `stream` holds, read in chunks (None: more than `max_bytes`)."""
    digest = hashlib.sha256()
    seen = 0
    while chunk := stream.read(HASH_CHUNK):
        seen += len(chunk)
        if seen > max_bytes:
            return None
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_entries(root: Path, paths: Iterable[Path]) -> list[FileEntry]:
    entries = []
    for path in sorted(paths):
        digest, size = sha256_file(path)
        entries.append(FileEntry(path=path.relative_to(root).as_posix(), size=size, sha256=digest))
    return entries


def verify_files(root: Path, entries: Iterable[FileEntry]) -> list[str]:
    """Problems found checking files against the manifest (empty when all match)."""
    problems = []
    for entry in entries:
        path = root / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        digest, size = sha256_file(path)
        if size != entry.size:
            problems.append(f"{entry.path}: size {size} bytes, manifest says {entry.size}")
        elif digest != entry.sha256:
            problems.append(f"{entry.path}: SHA-256 {digest[:16]}… does not match the manifest")
    return problems


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json")
