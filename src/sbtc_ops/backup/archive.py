"""From "a backup" (an id in a repository, or any pg_dump output on disk) to a restorable
archive: fetched, checksum-checked, decrypted and decompressed, its format detected.

Accepted: sbtc-ops backups (custom or directory format, optionally age-encrypted), and any
pg_dump output an operator already has — plain SQL, custom, directory or tar, optionally
gzip- or zstd-compressed or age-encrypted.

Everything here treats the archive as hostile (docs/threat-model.md): files are staged and
hashed before use (backup/staging.py); decompression runs in the sandbox, its output capped;
only the finished archive is handed to the sandbox user that restores it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sbtc_ops.backup.agedecrypt import AgeHeaderError, decrypt_files
from sbtc_ops.backup.crypto import AGE_MAGIC, AGE_SUFFIX
from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest
from sbtc_ops.backup.staging import Staging, stage_manifest_files, stage_unlisted
from sbtc_ops.backup.storage import LocalStorage, Storage, StorageError
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.files import PRIVATE_DIR_MODE, create_private, read_capped, write_all
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.progress import Advance, byte_progress, say, step, watch_growth

ArchiveFormat = Literal["custom", "directory", "tar", "plain"]

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CUSTOM_MAGIC = b"PGDMP"
# Decompressed output may be this many times the compressed input, and at least the floor:
# plain SQL compresses 5-10x, a bomb 1000x. Overridden by backup.max_expanded_mb.
EXPANSION_RATIO = 100
EXPANSION_FLOOR = 64 << 20
FREE_SPACE_MARGIN = 256 << 20


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


@dataclass
class StagedBackup:
    """A backup's files copied into the staging directory, and what their check found."""

    root: Path
    problems: list[str]


def stage(located: LocatedBackup, staging: Staging) -> StagedBackup:
    """Copy the backup into `staging`, checking each file against its manifest while copying
    (files fetched from S3 are already there and are hashed in place)."""
    if located.manifest is None:
        return StagedBackup(stage_unlisted(located.root, staging), [])
    in_place = located.root.resolve().is_relative_to(staging.root.resolve())
    problems = stage_manifest_files(located.root, located.manifest, staging, in_place=in_place)
    return StagedBackup(located.root if in_place else staging.archive, problems)


def locate(
    ref: str,
    storages: list[Storage],
    work_dir: Path,
    *,
    latest: bool = False,
    kind: str = "full",
) -> LocatedBackup:
    """Find a backup by path, by id in the configured storages, or the newest complete one of
    `kind` ("full", or "dkg-only": a DKG export is never "the latest backup" by default)."""
    if not latest:
        path = Path(ref)
        if path.exists():
            return _locate_path(ref, path)
        if not is_backup_id(ref):
            raise UsageError(f"{ref!r} is neither an existing file or directory nor a backup id")
    unreachable: dict[str, str] = {}
    for storage in storages:
        try:
            backups = [b for b in storage.list_backups() if b.complete]
        except StorageError as exc:
            # Looked for in the others; named if the backup is found nowhere.
            log.warning("%s; looking in the other locations", exc.message)
            unreachable[storage.name] = exc.message
            continue
        newest = [b for b in backups if b.manifest is not None and b.manifest.kind == kind]
        chosen = max(newest, key=lambda b: b.id) if latest and newest else None
        if not latest:
            chosen = next((b for b in backups if b.id == ref), None)
        if chosen is None:
            continue
        with _download_progress(storage, chosen.size) as advance:
            root = storage.fetch(chosen.id, work_dir, advance)
        say(f"backup {chosen.id} found in {storage.name}")
        return LocatedBackup(ref, chosen.id, root, chosen.manifest, storage.name)
    where = ", ".join(s.name for s in storages) or "no configured location"
    if unreachable:
        what = "no complete backup found" if latest else f"backup {ref} not found"
        searched = "" if len(unreachable) == len(storages) else " in the reachable locations"
        raise StorageError(f"{what}{searched}; " + "; ".join(unreachable.values()))
    if latest:
        raise UsageError(f"no complete {kind} backup found in {where}")
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
        manifest = Manifest.from_bytes(
            read_capped(manifest_path, MAX_MANIFEST_BYTES), str(manifest_path)
        )
        if path.is_file():
            if all(entry.path != path.name for entry in manifest.files):
                manifest = None  # a stray file next to a backup: not covered by its manifest
            else:
                root = path.parent
    return LocatedBackup(ref, manifest.id if manifest else None, root, manifest)


@dataclass
class _Preparing:
    """What prepare() needs along the way."""

    staging: Staging
    sandbox: Sandbox
    identity_file: Path | None
    max_expanded: int | None
    steps: list[str] = field(default_factory=list)

    def decrypt(self, pairs: list[tuple[Path, Path]]) -> None:
        self.staging.raise_if_stopped()
        try:
            decrypt_files(pairs, self.identity_file, limits=self.staging.limits)
        except AgeHeaderError as exc:
            raise ArchiveError(str(exc)) from None
        self.steps.append("decrypted (age)")


def prepare(
    staged: StagedBackup,
    staging: Staging,
    identity_file: Path | None,
    *,
    max_expanded_bytes: int | None = None,
) -> PreparedArchive:
    """Decrypt and decompress inside `staging` as needed, detect the archive format, and hand
    the result to the sandbox user. Call only once the staged files passed their check.
    Under a budget (Staging.put_under) a breach kills the children: StagingStopped."""
    ctx = _Preparing(staging, staging.sandbox(), identity_file, max_expanded_bytes)
    try:
        prepared = _prepare(staged.root, ctx)
    except SbtcOpsError:
        staging.raise_if_stopped()  # a child killed at a breach fails as a breach
        raise
    staging.hand_over(prepared.path)
    return prepared


def _prepare(root: Path, ctx: _Preparing) -> PreparedArchive:
    if not root.is_dir():
        return _prepare_file(root, ctx)
    directory = _dump_directory(root)
    if any(p.is_file() for p in directory.rglob(f"*{AGE_SUFFIX}")):
        directory = _decrypt_directory(directory, ctx)
    if (directory / "toc.dat").is_file():
        return PreparedArchive(directory, "directory", ctx.steps)
    return _prepare_file(_single_dump_file(directory), ctx)


def _decrypt_directory(directory: Path, ctx: _Preparing) -> Path:
    """A copy of `directory` with its .age files decrypted (all in one child process)."""
    clear_dir = ctx.staging.root / "decrypted.dir"
    clear_dir.mkdir(mode=PRIVATE_DIR_MODE)
    pairs = []
    for path in directory.rglob("*"):
        if path.is_file():
            relative = path.relative_to(directory).as_posix().removesuffix(AGE_SUFFIX)
            target = clear_dir / relative
            target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            if path.name.endswith(AGE_SUFFIX):
                pairs.append((path, target))
            else:
                shutil.copyfile(path, target)
    ctx.decrypt(pairs)
    return clear_dir


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


def _compression(head: bytes) -> str | None:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def _prepare_file(path: Path, ctx: _Preparing) -> PreparedArchive:
    """age → at most one of gzip/zstd → a dump, in that order; anything more is refused (a
    few hundred bytes of zstd → gzip → zstd expand to gigabytes, and every extra layer is
    more attacker-chosen parsing). The one expansion is capped relative to the size of the
    file as staged, whatever layer it is."""
    work_dir, steps = ctx.staging.root, ctx.steps
    original_size = path.stat().st_size
    current = path
    if _magic(current).startswith(AGE_MAGIC):
        target = work_dir / f"decrypted-{len(steps)}"
        # The clear text is about as long as the ciphertext: a bar with an ETA.
        with step("decrypt"), watch_growth("decrypt", target, original_size):
            ctx.decrypt([(current, target)])
        current = target
    kind = _compression(_magic(current))
    if kind is not None:
        target = work_dir / f"expanded-{len(steps)}"
        with step("decompress"), watch_growth(f"expand ({kind})", target):
            _expand(kind, current, target, ctx, original_size)
        steps.append(f"decompressed ({kind})")
        current = target
    return PreparedArchive(current, _detect_format(current), steps)


def expansion_limit(source_size: int, configured: int | None, free_bytes: int) -> int:
    """How many bytes a compressed file may expand to: the configured cap, else a generous
    multiple of its size; never more than the free space (less a margin) allows."""
    limit = configured or max(EXPANSION_RATIO * source_size, EXPANSION_FLOOR)
    return max(0, min(limit, free_bytes - FREE_SPACE_MARGIN))


def _expand(kind: str, source: Path, target: Path, ctx: _Preparing, original_size: int) -> None:
    """Decompress `source` into `target` in the sandbox (the decompressor parses hostile
    bytes; it gets them on stdin and has no file access of its own); we only copy its
    output, counting, and stop it at the limit (relative to `original_size`, the file as
    staged) or as soon as its first bytes show another layer of compression or encryption."""
    ctx.staging.raise_if_stopped()
    free = shutil.disk_usage(target.parent).free
    limit = expansion_limit(original_size, ctx.max_expanded, free)
    tool = shutil.which("gzip" if kind == "gzip" else "zstd")
    if tool is None:
        raise ArchiveError(
            f"{source.name} is {kind}-compressed and no `{'gzip' if kind == 'gzip' else 'zstd'}` "
            "program is installed to expand it in the sandbox",
            hint=f"install it (Debian: apt-get install {kind}), or decompress the file yourself",
        )
    with source.open("rb") as reader:
        proc = ctx.sandbox.popen(
            [tool, "-dc"], stdin=reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    try:
        written = _copy_capped(proc, target, limit)
        _, stderr = proc.communicate()
        _check_expanded(proc, written, stderr, source.name, kind, limit)
    except BaseException:
        ctx.sandbox.kill(proc)
        proc.wait()
        target.unlink(missing_ok=True)  # refused or interrupted: nothing half-expanded stays
        raise


def _check_expanded(
    proc: subprocess.Popen[bytes],
    written: int | None,
    stderr: bytes,
    name: str,
    kind: str,
    limit: int,
) -> None:
    """ArchiveError unless the decompressor's output was complete and within bounds."""
    if written == _NESTED:
        raise _nested_error(name, f"{kind} decompression")
    if written is None:
        raise ArchiveError(
            f"{name}: decompressed data exceeds {limit >> 20} MiB (100x the file as staged, "
            "at least 64 MiB, or backup.max_expanded_mb): refusing it as a decompression bomb",
            hint="if the archive is genuine, raise backup.max_expanded_mb, or free disk space",
        )
    if proc.returncode != 0:
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ArchiveError(f"{name}: {kind} data is corrupt: {detail[0]}")


_NESTED = -1


def _nested_error(name: str, layer: str) -> ArchiveError:
    return ArchiveError(
        f"{name}: still compressed or encrypted after {layer}: sbtc-ops "
        "expands at most one gzip or zstd layer (inside age encryption), to keep "
        "decompression bombs bounded",
        hint="decompress the extra layers yourself if the archive is genuine",
    )


def _copy_capped(proc: subprocess.Popen[bytes], target: Path, limit: int) -> int | None:
    """Copy the child's stdout into `target`; None (child killed) past `limit` bytes, and
    _NESTED (child killed) when the output starts with another compression or age layer."""
    assert proc.stdout is not None
    out = create_private(target)
    written = 0
    try:
        while chunk := proc.stdout.read(1 << 20):
            if written == 0 and (_compression(chunk) or chunk.startswith(AGE_MAGIC)):
                proc.kill()
                return _NESTED
            written += len(chunk)
            if written > limit:
                proc.kill()
                return None
            write_all(out, chunk)
    finally:
        os.close(out)
    return written


def _detect_format(path: Path) -> ArchiveFormat:
    """From the first block only: never a walk of the file (a tar walk costs time in the
    attacker's file size, and Python 3.11.7's tarfile loops forever on a negative member size,
    CVE-2025-8194). Whether a tar or custom archive really is a dump is pg_restore's to say,
    in the sandbox."""
    head = _magic(path)
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    if is_pg_dump_tar_header(head):
        return "tar"
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise ArchiveError(
            f"{path.name} is a tar file not starting with toc.dat: not a pg_dump archive"
        )
    kind = _compression(head)
    if kind is not None or head.startswith(AGE_MAGIC):
        raise _nested_error(path.name, "one layer")
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


def is_pg_dump_tar_header(block: bytes) -> bool:
    """Whether a 512-byte block is the first header of a pg_dump tar archive: a ustar header
    with a valid checksum whose member is toc.dat (pg_dump writes it first)."""
    if len(block) < 512 or block[257:262] != b"ustar":
        return False
    if block[:100].rstrip(b"\0") != b"toc.dat":
        return False
    try:
        recorded = int(block[148:156].strip(b" \0") or b"-1", 8)
    except ValueError:
        return False
    computed = sum(block[:148]) + 8 * ord(" ") + sum(block[156:512])
    return recorded == computed
