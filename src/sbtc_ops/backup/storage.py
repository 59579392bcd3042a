"""Where backups live: a local directory and/or S3-compatible object storage.

Layout, the same in both: `<root>/<id>/manifest.json` plus the archive files beside it.
The manifest is written last, so a backup without one is incomplete (never listed as
complete, removed by prune). Locally a backup is written under `<id>.partial/` and renamed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Manifest,
    member_parts,
    sha256_capped,
)
from sbtc_ops.errors import DependencyError, SbtcOpsError, UsageError
from sbtc_ops.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    UnsafeFileError,
    confined_path,
    fsync_dir,
    read_capped,
    write_private_atomic,
)
from sbtc_ops.proc import InBackground

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from sbtc_ops.config import S3Settings

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
T = TypeVar("T")
Progress = Callable[[int], None]


class StorageError(SbtcOpsError):
    """A storage could not be read or written."""


class LocationMissing(StorageError):
    """A local backup location that does not exist (never written to, or a typo)."""


@dataclass(frozen=True)
class StoredBackup:
    id: str
    location: str
    complete: bool
    manifest: Manifest | None
    size: int
    invalid: str | None = None
    """Why the backup's manifest is unusable (not complete then); None for a valid one."""


def _checked_manifest(read: Callable[[], bytes], where: str) -> tuple[Manifest | None, str | None]:
    """(manifest, None), or (None, why not) for a manifest whose content is unusable (not
    JSON, not our schema, too large, not a regular file): that one backup is `invalid`, the
    location still lists. A failure to reach the storage is not a property of the backup
    and propagates (prune must never delete a backup because the network blinked)."""
    try:
        data = read()
    except UnsafeFileError as exc:
        return None, exc.message
    try:
        return Manifest.from_bytes(data, where), None
    except SbtcOpsError as exc:
        return None, exc.message


def _read_local_manifest(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_MANIFEST_BYTES)
    except UnsafeFileError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None


class Storage(Protocol):
    @property
    def name(self) -> str: ...

    def check_writable(self) -> None: ...

    def list_backups(self) -> list[StoredBackup]: ...

    def backup_ids(self) -> set[str]: ...

    def clean_abandoned(self, *, dry_run: bool) -> list[str]: ...

    def read_manifest(self, backup_id: str) -> Manifest: ...

    def store(
        self, backup_id: str, source_dir: Path, manifest: Manifest, progress: Progress
    ) -> None: ...

    def delete(self, backup_id: str) -> None: ...

    def fetch(self, backup_id: str, work_dir: Path, progress: Progress) -> Path: ...


# -- local --------------------------------------------------------------------------------


def fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            except OSError as exc:
                # A failing disk reports here (writeback): name the file it failed to write.
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class LocalStorage:
    """A directory on this host (0700), holding one directory per backup."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def name(self) -> str:
        return str(self.root)

    def ensure(self) -> None:
        try:
            self.root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create backup directory {self.root}: {exc.strerror}"
            ) from None

    def check_writable(self) -> None:
        self.ensure()
        probe = self.root / f".write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"backup directory {self.root} is not writable: {exc.strerror}"
            ) from None

    def begin(self, backup_id: str) -> Path:
        """A fresh private directory to write a backup's files into."""
        self.ensure()
        partial = self.root / f"{backup_id}{PARTIAL_SUFFIX}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(mode=PRIVATE_DIR_MODE)
        return partial

    def abort(self, backup_id: str) -> None:
        shutil.rmtree(self.root / f"{backup_id}{PARTIAL_SUFFIX}", ignore_errors=True)

    def commit(self, backup_id: str, manifest: Manifest) -> Path:
        """fsync, rename `<id>.partial` → `<id>`, then write the manifest last."""
        partial = self.root / f"{backup_id}{PARTIAL_SUFFIX}"
        final = self.root / backup_id
        fsync_tree(partial)
        partial.rename(final)
        fsync_dir(self.root)
        write_private_atomic(final / MANIFEST_NAME, manifest.to_bytes())
        return final

    def store(
        self, backup_id: str, source_dir: Path, manifest: Manifest, progress: Progress
    ) -> None:
        partial = self.begin(backup_id)
        try:
            for path in sorted(source_dir.rglob("*")):
                if path.is_file() and path.name != MANIFEST_NAME:
                    target = partial / path.relative_to(source_dir)
                    target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                    target.chmod(PRIVATE_FILE_MODE)
                    progress(path.stat().st_size)
            self.commit(backup_id, manifest)
        except BaseException:
            self.abort(backup_id)
            raise

    def list_backups(self) -> list[StoredBackup]:
        # A location that is not there is an error, never "no backups": a typo in --repo, an
        # unmounted disk or a missing permission must not look like an empty repository.
        if not self.root.exists():
            raise LocationMissing(f"backup location {self.root} does not exist")
        if not self.root.is_dir():
            raise StorageError(f"backup location {self.root} is not a directory")
        try:
            children = sorted(self.root.iterdir())
        except OSError as exc:
            raise StorageError(f"cannot list backup location {self.root}: {exc.strerror}") from None
        found = []
        for child in children:
            backup_id = child.name.removesuffix(PARTIAL_SUFFIX)
            if not child.is_dir() or not is_backup_id(backup_id):
                continue
            manifest_path = child / MANIFEST_NAME
            manifest, invalid = None, None
            if not child.name.endswith(PARTIAL_SUFFIX) and manifest_path.is_symlink():
                invalid = f"{manifest_path} is a symbolic link"
            elif not child.name.endswith(PARTIAL_SUFFIX) and manifest_path.exists():
                manifest, invalid = _checked_manifest(
                    functools.partial(_read_local_manifest, manifest_path), str(manifest_path)
                )
            found.append(
                StoredBackup(
                    backup_id,
                    str(child),
                    manifest is not None,
                    manifest,
                    _dir_size(child),
                    invalid,
                )
            )
        return found

    def backup_ids(self) -> set[str]:
        """Ids present in any state (complete, incomplete), without reading manifests."""
        if not self.root.is_dir():
            return set()
        names = (child.name.removesuffix(PARTIAL_SUFFIX) for child in self.root.iterdir())
        return {name for name in names if is_backup_id(name)}

    def clean_abandoned(self, *, dry_run: bool) -> list[str]:
        """Nothing to do: an interrupted local backup is an incomplete `<id>.partial`."""
        return []

    def read_manifest(self, backup_id: str) -> Manifest:
        path = self.root / backup_id / MANIFEST_NAME
        if not path.is_file():
            raise StorageError(f"backup {backup_id} not found (or incomplete) in {self.root}")
        return Manifest.from_bytes(_read_local_manifest(path), str(path))

    def delete(self, backup_id: str) -> None:
        for name in (backup_id, f"{backup_id}{PARTIAL_SUFFIX}"):
            path = self.root / name
            if path.exists():
                # Remove the manifest first so a half-deleted backup is never "complete".
                with contextlib.suppress(FileNotFoundError):
                    (path / MANIFEST_NAME).unlink()
                shutil.rmtree(path)

    def fetch(self, backup_id: str, work_dir: Path, progress: Progress) -> Path:
        return self.root / backup_id


# -- S3 -----------------------------------------------------------------------------------

# Multipart uploads in parts of this size; the ETag of such an upload is computed locally
# and compared with the server's, so every byte is checked without downloading it again.
PART_SIZE = 16 * 1024 * 1024


# What S3 (and SeaweedFS, MinIO) return for objects stored as sent: the MD5 of the object,
# or for a multipart upload the MD5 of the parts' MD5s and the number of parts. Other ETags
# (SSE-KMS/SSE-C on AWS, some gateways) are opaque and cannot be recomputed here.
STANDARD_ETAG = re.compile(r"^[0-9a-f]{32}(-[0-9]+)?$")
SHA256_METADATA = "sha256"


def multipart_etag(path: Path, part_size: int = PART_SIZE) -> str:
    """The ETag S3 gives an object uploaded from `path` in parts of `part_size`."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size < part_size:
            return hashlib.md5(handle.read(), usedforsecurity=False).hexdigest()
        digests = []
        while chunk := handle.read(part_size):
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def check_uploaded(
    url: str, key: str, path: Path, head: Mapping[str, Any], sha256: str | None
) -> None:
    """After an upload: the size must match; a standard ETag must equal the one computed
    from the local file (every byte checked without downloading it again); an opaque ETag
    falls back to the SHA-256 recorded in the object's metadata at upload."""
    expected_size = path.stat().st_size
    if head["ContentLength"] != expected_size:
        raise StorageError(
            f"{url}: {key} has {head['ContentLength']} bytes after upload, expected {expected_size}"
        )
    etag = str(head.get("ETag", "")).strip('"')
    if STANDARD_ETAG.match(etag):
        if etag != multipart_etag(path):
            raise StorageError(f"{url}: {key} checksum (ETag) differs from the local file")
        return
    log.debug("%s: %s has a non-standard ETag %r; checking size and metadata", url, key, etag)
    stored = head.get("Metadata", {}).get(SHA256_METADATA)
    if sha256 and stored != sha256:
        raise StorageError(f"{url}: {key} SHA-256 metadata differs from the local file")


# A HEAD request has no body: its error is the bare status code. Said in words.
_HEAD_MEANINGS = {
    "404": "Not Found (NoSuchBucket: the bucket does not exist)",
    "403": "Forbidden (AccessDenied: check the credentials and the bucket policy)",
    "301": "Moved Permanently (the bucket is in another region: set backup.s3.region)",
}


def parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"{url!r} is not an S3 location (s3://bucket/prefix)")
    return parts.netloc, parts.path.strip("/")


class S3Storage:
    """An S3-compatible bucket and prefix (AWS, MinIO, SeaweedFS, …).

    Every operation runs against a wall-clock deadline (backup.s3.timeout_s, plus the size
    at backup.s3.min_transfer_mib_s for a transfer): boto3's own connect and read timeouts
    bound each socket wait but not an operation, which an endpoint that accepts and never
    answers, or trickles, can stretch without end. The call runs in a worker thread; at the
    deadline it is abandoned (the thread dies with the process, its client is dropped) and
    the location is unreachable for the rest of the run, so one storage never holds up the
    others."""

    def __init__(self, url: str, settings: S3Settings) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.settings = settings
        self._client: S3Client | None = None
        self._abandoned: str | None = None

    @property
    def name(self) -> str:
        return self.url

    @property
    def client(self) -> S3Client:
        if self._client is None:
            # boto3 is imported here and below, not at the top: it takes a noticeable
            # fraction of a second to load, and only runs that reach S3 should pay for it.
            import boto3
            from botocore.config import Config

            secret = self.settings.secret_access_key
            timeout = self.settings.timeout_s
            self._client = boto3.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region or "us-east-1",
                aws_access_key_id=self.settings.access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                config=Config(
                    connect_timeout=min(10.0, timeout),
                    read_timeout=min(60.0, timeout),
                    retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def key(self, *parts: str) -> str:
        """The object key of `parts` under this location's prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError  # lazy: see client

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "error")
            message = _HEAD_MEANINGS.get(code, "") or error.get("Message", "")
            raise StorageError(f"{self.url}: {action} failed: {code} {message}".strip()) from None
        except BotoCoreError as exc:
            raise StorageError(f"{self.url}: {action} failed: {exc}") from None

    def deadline_s(self, size: int = 0) -> float:
        """The deadline of one operation moving `size` bytes."""
        rate = self.settings.min_transfer_mib_s * 1024 * 1024
        return self.settings.timeout_s + size / rate

    def _bounded(self, action: str, fn: Callable[[], T], size: int = 0) -> T:
        """`fn()` (boto3 calls) within the operation's deadline, its errors made ours."""
        if self._abandoned is not None:
            raise StorageError(f"{self.url}: {action} not attempted: {self._abandoned}")

        def work() -> T:
            with self._errors(action):
                return fn()

        seconds = self.deadline_s(size)
        running = InBackground(work, name="s3")
        try:
            return running.result(timeout=seconds)
        except TimeoutError:
            if running.done():
                raise  # the call's own error, not our deadline
        self._abandoned = f"an earlier operation did not finish within {seconds:.0f} s"
        self._client = None  # the worker may still hold the old one; never reused
        raise StorageError(
            f"{self.url}: {action} did not finish within {seconds:.0f} s "
            "(backup.s3.timeout_s, backup.s3.min_transfer_mib_s); the location is treated "
            "as unreachable for the rest of this run"
        )

    def check_writable(self) -> None:
        self._bounded("checking the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))

    def _list_objects(self) -> dict[str, list[dict[str, Any]]]:
        prefix = self.key("") + "/" if self.prefix else ""

        def listing() -> dict[str, list[dict[str, Any]]]:
            by_backup: dict[str, list[dict[str, Any]]] = {}
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(prefix) :]
                    backup_id, _, _name = rest.partition("/")
                    if is_backup_id(backup_id):
                        by_backup.setdefault(backup_id, []).append(dict(obj))
            return by_backup

        return self._bounded("listing backups", listing)

    def list_backups(self) -> list[StoredBackup]:
        found = []
        for backup_id, objects in sorted(self._list_objects().items()):
            by_name = {obj["Key"].rsplit("/", 1)[-1]: obj for obj in objects}
            manifest, invalid = None, None
            if MANIFEST_NAME in by_name:
                manifest, invalid = _checked_manifest(
                    functools.partial(self._manifest_bytes, backup_id),
                    f"{self.url}/{backup_id}/{MANIFEST_NAME}",
                )
            size = sum(int(obj["Size"]) for obj in objects)
            found.append(
                StoredBackup(
                    backup_id,
                    f"{self.url}/{backup_id}",
                    manifest is not None,
                    manifest,
                    size,
                    invalid,
                )
            )
        return found

    def backup_ids(self) -> set[str]:
        """Ids present in any state (complete, incomplete), without reading manifests."""
        return set(self._list_objects())

    def clean_abandoned(self, *, dry_run: bool) -> list[str]:
        """Abort the multipart uploads a killed backup left under the prefix: invisible in
        listings, their parts still take space (and cost money) until aborted."""
        prefix = self.key("") + "/" if self.prefix else ""

        def unfinished() -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    key = upload.get("Key", "")
                    if is_backup_id(key[len(prefix) :].partition("/")[0]):
                        found.append((key, upload.get("UploadId", "")))
            return found

        found = self._bounded("listing unfinished uploads", unfinished)
        if not dry_run:
            for key, upload_id in found:
                self._bounded(
                    "aborting unfinished uploads",
                    functools.partial(
                        self.client.abort_multipart_upload,
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                    ),
                )
        return sorted(key for key, _ in found)

    def _manifest_bytes(self, backup_id: str) -> bytes:
        """The manifest object, read up to MAX_MANIFEST_BYTES (a larger one is refused as
        unsafe: that backup is invalid, the location still lists)."""
        key = self.key(backup_id, MANIFEST_NAME)
        return self.read_object(key, MAX_MANIFEST_BYTES, too_large=UnsafeFileError)

    def read_object(
        self, key: str, max_bytes: int, *, too_large: type[SbtcOpsError] = StorageError
    ) -> bytes:
        """One object's bytes; one larger than `max_bytes` is refused (`too_large`) after
        reading at most one byte more."""

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                data: bytes = body.read(max_bytes + 1)
            finally:
                body.close()
            return data

        data = self._bounded(f"reading {key}", read, max_bytes)
        if len(data) > max_bytes:
            raise too_large(f"{self.url}/{key} is larger than {max_bytes} bytes")
        return data

    def object_digest(self, key: str, max_bytes: int) -> str | None:
        """SHA-256 of one object, streamed (None: larger than `max_bytes`)."""

        def digest() -> str | None:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return sha256_capped(body, max_bytes)
            finally:
                body.close()

        return self._bounded(f"reading {key}", digest, max_bytes)

    def object_names(self, prefix: str, limit: int) -> list[str]:
        """Names of the objects under `prefix` (keys without it), in listing order; the
        listing stops once more than `limit` are found (a hostile bucket can hold millions)."""

        def listing() -> list[str]:
            found: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found += [obj["Key"][len(prefix) :] for obj in page.get("Contents", [])]
                if len(found) > limit:
                    break
            return found

        return self._bounded(f"listing {prefix}", listing)

    def put_new(self, key: str, data: bytes) -> None:
        """Write one object that must not exist yet (objects that are only ever added)."""
        from botocore.exceptions import ClientError  # lazy: see client

        def exists() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        def write() -> None:
            if exists():
                raise StorageError(f"{self.url}/{key} exists already: never replaced")
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

        self._bounded(f"writing {key}", write, len(data))

    def read_manifest(self, backup_id: str) -> Manifest:
        body = self._manifest_bytes(backup_id)
        return Manifest.from_bytes(body, f"{self.url}/{backup_id}/{MANIFEST_NAME}")

    def _upload(self, path: Path, key: str, sha256: str | None, progress: Progress) -> None:
        from boto3.s3.transfer import TransferConfig  # lazy: see client

        # No transfer threads of boto3's own: they are not daemon threads, and one stuck in
        # a read would keep the process alive after an abandoned upload.
        config = TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, use_threads=False
        )
        extra = {"Metadata": {SHA256_METADATA: sha256}} if sha256 else None

        def upload() -> Mapping[str, Any]:
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra, Config=config, Callback=progress
            )
            return self.client.head_object(Bucket=self.bucket, Key=key)

        head = self._bounded(f"uploading {key}", upload, path.stat().st_size)
        check_uploaded(self.url, key, path, head, sha256)

    def store(
        self, backup_id: str, source_dir: Path, manifest: Manifest, progress: Progress
    ) -> None:
        digests = {entry.path: entry.sha256 for entry in manifest.files}
        try:
            for path in sorted(source_dir.rglob("*")):
                if path.is_file() and path.name != MANIFEST_NAME:
                    relative = path.relative_to(source_dir).as_posix()
                    key = self.key(backup_id, relative)
                    self._upload(path, key, digests.get(relative), progress)
            self._bounded(
                "writing the manifest",
                functools.partial(
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=self.key(backup_id, MANIFEST_NAME),
                    Body=manifest.to_bytes(),
                    ContentType="application/json",
                ),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete(backup_id)
            raise

    def delete(self, backup_id: str) -> None:
        keys = [obj["Key"] for obj in self._list_objects().get(backup_id, [])]
        # Manifest first: an interrupted delete leaves an incomplete backup, never a
        # complete-looking one with files missing.
        keys.sort(key=lambda key: not key.endswith("/" + MANIFEST_NAME))

        def delete_all() -> None:
            for key in keys:
                self.client.delete_object(Bucket=self.bucket, Key=key)

        self._bounded(f"deleting {backup_id}", delete_all)

    def fetch(self, backup_id: str, work_dir: Path, progress: Progress) -> Path:
        """Download exactly the files the manifest names (each name checked, each kept
        under `work_dir`, none larger than the manifest says); other objects under the
        backup's prefix are never fetched, whatever their keys."""
        if not is_backup_id(backup_id):
            raise UsageError(f"{backup_id!r} is not a backup id")
        manifest = self.read_manifest(backup_id)
        target = work_dir / backup_id
        target.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        fetched: set[str] = set()
        for entry in manifest.files:
            if entry.path in fetched:  # listed twice: the checksum check says so (corrupt)
                continue
            fetched.add(entry.path)
            try:
                destination = confined_path(target, member_parts(entry.path))
            except OSError:  # e.g. listed both as a file and as a directory: reported later
                continue
            key = self.key(backup_id, entry.path)
            self._bounded(
                f"downloading {key}",
                functools.partial(self._download, key, entry.size, destination, progress),
                entry.size,
            )
            if destination.exists():
                destination.chmod(PRIVATE_FILE_MODE)
        return target

    def _download(self, key: str, size: int, destination: Path, progress: Progress) -> None:
        found = int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        if found != size:
            return  # not downloaded: the checksum check reports the missing file
        from boto3.s3.transfer import TransferConfig  # lazy: see client

        self.client.download_file(
            self.bucket,
            key,
            str(destination),
            Callback=progress,
            Config=TransferConfig(use_threads=False),  # see _upload
        )


# -- selection ----------------------------------------------------------------------------


def storage_for(location: str, s3_settings: S3Settings) -> Storage:
    if location.startswith("s3://"):
        return S3Storage(location, s3_settings)
    if "://" in location:
        raise UsageError(
            f"unsupported backup location {location!r}: use a directory or s3://bucket/prefix"
        )
    return LocalStorage(Path(location))


def configured_storages(
    local_dir: Path | None, s3_url: str | None, s3_settings: S3Settings
) -> list[Storage]:
    storages: list[Storage] = []
    if local_dir is not None:
        storages.append(LocalStorage(local_dir))
    if s3_url:
        storages.append(S3Storage(s3_url, s3_settings))
    if not storages:
        raise DependencyError(
            "no backup location configured",
            hint="set backup.local_dir and/or backup.s3.url in sbtc-ops.toml, or pass --repo DIR|s3://bucket/prefix",
        )
    return storages
