"""From "a backup" (an id in a repository, or any pg_dump output on disk) to a restorable
archive: fetched, checksum-checked, decrypted and decompressed, its format detected.

Accepted: sbtc-ops backups (custom or directory format, optionally age-encrypted), and any
pg_dump output an operator already has — plain SQL, custom, directory or tar, optionally
gzip- or zstd-compressed or age-encrypted.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sbtc_ops.backup.crypto import AGE_MAGIC, AGE_SUFFIX, decrypt_file, load_identities
from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.manifest import MANIFEST_NAME, Manifest, verify_files
from sbtc_ops.backup.storage import LocalStorage, Storage
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.progress import Advance, byte_progress, say, step, watch_growth

ArchiveFormat = Literal["custom", "directory", "tar", "plain"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CUSTOM_MAGIC = b"PGDMP"


class ArchiveError(SbtcOpsError):
    """The archive is not usable (wrong checksum, not a dump, cannot decrypt)."""


@dataclass
class LocatedBackup:
    """Where a backup's files are on this host, and its manifest when it has one."""

    ref: str
    backup_id: str | None
    root: Path  # directory holding the files, or the single dump file
    manifest: Manifest | None
    storage: str | None = None


@dataclass
class PreparedArchive:
    path: Path
    format: ArchiveFormat
    steps: list[str] = field(default_factory=list)  # what was done: decrypted, decompressed…


def locate(
    ref: str, storages: list[Storage], work_dir: Path, *, latest: bool = False
) -> LocatedBackup:
    """Find a backup by path, by id in the configured storages, or the newest complete one."""
    if not latest:
        path = Path(ref)
        if path.exists():
            return _locate_path(ref, path)
        if not is_backup_id(ref):
            raise UsageError(f"{ref!r} is neither an existing file or directory nor a backup id")
    for storage in storages:
        backups = [b for b in storage.list_backups() if b.complete]
        chosen = max(backups, key=lambda b: b.id) if latest and backups else None
        if not latest:
            chosen = next((b for b in backups if b.id == ref), None)
        if chosen is None:
            continue
        with _download_progress(storage, chosen.size) as advance:
            root = storage.fetch(chosen.id, work_dir, advance)
        say(f"backup {chosen.id} found in {storage.name}")
        return LocatedBackup(ref, chosen.id, root, chosen.manifest, storage.name)
    where = ", ".join(s.name for s in storages) or "no configured location"
    if latest:
        raise UsageError(f"no complete backup found in {where}")
    raise UsageError(f"backup {ref} not found (or incomplete) in {where}")


def _download_progress(storage: Storage, size: int) -> AbstractContextManager[Advance]:
    if isinstance(storage, LocalStorage):  # nothing is copied
        return nullcontext(lambda _n: None)
    return byte_progress(f"download from {storage.name}", total=size or None)


def _locate_path(ref: str, path: Path) -> LocatedBackup:
    """A backup directory, or an archive file inside one (its manifest then applies), or any
    pg_dump output with no manifest."""
    root = path
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path.parent / MANIFEST_NAME
    manifest = None
    if manifest_path.is_file():
        manifest = Manifest.from_bytes(manifest_path.read_bytes(), str(manifest_path))
        if path.is_file():
            if all(entry.path != path.name for entry in manifest.files):
                manifest = None  # a stray file next to a backup: not covered by its manifest
            else:
                root = path.parent
    return LocatedBackup(ref, manifest.id if manifest else None, root, manifest)


def check_checksums(located: LocatedBackup) -> list[str]:
    """Problems with the files against the manifest; empty when they match."""
    if located.manifest is None:
        return []
    with step(f"checksums of {len(located.manifest.files)} file(s)"):
        return verify_files(located.root, located.manifest.files)


def prepare(located: LocatedBackup, work_dir: Path, identity_file: Path | None) -> PreparedArchive:
    """Decrypt and decompress into `work_dir` as needed; detect the archive format."""
    steps: list[str] = []
    identities: list[Any] | None = None

    def identities_once() -> list[Any]:
        nonlocal identities
        if identities is None:
            identities = load_identities(identity_file)
        return identities

    root = located.root
    if root.is_dir():
        directory = _dump_directory(root)
        encrypted = [p for p in directory.rglob(f"*{AGE_SUFFIX}") if p.is_file()]
        if encrypted:
            clear_dir = work_dir / "decrypted.dir"
            clear_dir.mkdir(mode=0o700)
            for path in directory.rglob("*"):
                if path.is_file():
                    target = clear_dir / path.relative_to(directory).as_posix().removesuffix(
                        AGE_SUFFIX
                    )
                    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    if path.name.endswith(AGE_SUFFIX):
                        decrypt_file(path, target, identities_once())
                    else:
                        shutil.copyfile(path, target)
            steps.append("decrypted (age)")
            directory = clear_dir
        if (directory / "toc.dat").is_file():
            return PreparedArchive(directory, "directory", steps)
        single = _single_dump_file(directory)
        return _prepare_file(single, work_dir, identities_once, steps)
    return _prepare_file(root, work_dir, identities_once, steps)


def _dump_directory(root: Path) -> Path:
    for name in ("signer.dir",):
        if (root / name).is_dir():
            return root / name
    return root


def _single_dump_file(directory: Path) -> Path:
    files = [p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_NAME]
    if len(files) != 1:
        raise ArchiveError(
            f"{directory} holds {len(files)} files and no toc.dat: not a backup sbtc-ops can read"
        )
    return files[0]


def _magic(path: Path, size: int = 512) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _prepare_file(path: Path, work_dir: Path, identities: Any, steps: list[str]) -> PreparedArchive:
    current = path
    for _ in range(3):  # age → compression → dump, in that order at most
        head = _magic(current)
        if head.startswith(AGE_MAGIC):
            target = work_dir / f"decrypted-{len(steps)}"
            # The clear text is about as long as the ciphertext: a bar with an ETA.
            with step("decrypt"), watch_growth("decrypt", target, current.stat().st_size):
                decrypt_file(current, target, identities())
            steps.append("decrypted (age)")
            current = target
        elif head.startswith(GZIP_MAGIC):
            target = work_dir / f"gunzipped-{len(steps)}"
            with step("decompress"), watch_growth("gunzip", target):
                _decompress_gzip(current, target)
            steps.append("decompressed (gzip)")
            current = target
        elif head.startswith(ZSTD_MAGIC):
            target = work_dir / f"unzstd-{len(steps)}"
            with step("decompress"), watch_growth("unzstd", target):
                _decompress_zstd(current, target)
            steps.append("decompressed (zstd)")
            current = target
        else:
            break
    return PreparedArchive(current, _detect_format(current), steps)


def _decompress_gzip(source: Path, target: Path) -> None:
    try:
        with gzip.open(source, "rb") as reader, target.open("wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
    except (OSError, EOFError) as exc:
        raise ArchiveError(f"{source.name}: gzip data is corrupt: {exc}") from None


def _decompress_zstd(source: Path, target: Path) -> None:
    import zstandard

    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            zstandard.ZstdDecompressor().copy_stream(reader, writer)
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{source.name}: zstd data is corrupt: {exc}") from None


def _detect_format(path: Path) -> ArchiveFormat:
    head = _magic(path)
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        try:
            with tarfile.open(path) as tar:
                if "toc.dat" in tar.getnames():
                    return "tar"
        except tarfile.TarError:
            pass
        raise ArchiveError(f"{path.name} is a tar file without toc.dat: not a pg_dump archive")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(
            f"{path.name} is not a PostgreSQL dump (custom, directory, tar or plain SQL), "
            "nor age-, gzip- or zstd-wrapped one"
        ) from None
    if "PostgreSQL database dump" in text or "SET " in text or "CREATE " in text:
        return "plain"
    raise ArchiveError(f"{path.name} does not look like a PostgreSQL dump")
