"""Backups in S3-compatible object storage (a real SeaweedFS `weed server -s3`): local and
off-site copies at once, multipart uploads checked by ETag, restore from the bucket, prune,
and the failures an operator meets (missing bucket, wrong credentials)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sbtc_ops.backup.ids import new_backup_id
from sbtc_ops.backup.manifest import MANIFEST_NAME
from sbtc_ops.backup.storage import PART_SIZE, StorageError, check_uploaded, multipart_etag
from tests.support.backup import (
    fake_manifest,
    fresh_database,
    table_counts,
)
from tests.support.cli import CliResult
from tests.support.pg import SourceServer
from tests.support.s3 import S3Server

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


def test_local_and_s3_copies_at_once_and_restore_from_the_bucket(
    cli: Cli,
    tmp_path: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
    bucket: str,
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    location = f"s3://{bucket}/signer-1"
    env = s3_server.env()

    result = cli(
        "-vv", "backup", "--db", url, "--to", str(repo), "--to", location, "--json", env=env
    )

    assert result.code == 0, result.stderr
    assert s3_server.secret_key not in result.stdout + result.stderr
    backup_id = result.json()["backup"]["id"]
    assert result.json()["locations"] == [str(repo / backup_id), f"{location}/{backup_id}"]
    local_files = sorted(p.name for p in (repo / backup_id).iterdir())
    assert s3_server.keys(bucket) == [f"signer-1/{backup_id}/{name}" for name in local_files]
    client = s3_server.client()
    for name in local_files:
        body = client.get_object(Bucket=bucket, Key=f"signer-1/{backup_id}/{name}")["Body"].read()
        assert (
            hashlib.sha256(body).digest()
            == hashlib.sha256((repo / backup_id / name).read_bytes()).digest()
        )

    listed = cli("backups", "--repo", str(repo), "--repo", location, "--json", env=env).json()
    assert {(row["location"], row["state"]) for row in listed["backups"]} == {
        (str(repo / backup_id), "complete"),
        (f"{location}/{backup_id}", "complete"),
    }

    target = fresh_database(backup_server, "restored_from_s3")
    restored = cli("restore", backup_id, "--repo", location, "--target-db", target, env=env)
    assert restored.code == 0, restored.stderr
    assert table_counts(target) == table_counts(url)


def test_a_multipart_upload_is_checked_by_its_etag(
    cli: Cli,
    tmp_path: Path,
    medium_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
    bucket: str,
) -> None:
    url, _ = medium_db
    repo = tmp_path / "repo"
    env = {**s3_server.env(), "SBTC_OPS_BACKUP__COMPRESSION": "none"}

    result = cli("backup", "--db", url, "--to", str(repo), "--to", f"s3://{bucket}", env=env)

    assert result.code == 0, result.stderr
    (backup_dir,) = list(repo.iterdir())
    archive = backup_dir / "signer.dump"
    assert archive.stat().st_size > PART_SIZE
    head = s3_server.client().head_object(Bucket=bucket, Key=f"{backup_dir.name}/signer.dump")
    parts = -(-archive.stat().st_size // PART_SIZE)
    # SeaweedFS gives multipart objects the standard S3 ETag: MD5 of the parts' MD5s, -count.
    assert head["ETag"].strip('"') == multipart_etag(archive)
    assert head["ETag"].strip('"').endswith(f"-{parts}")
    assert head["ContentLength"] == archive.stat().st_size
    manifest = json.loads((backup_dir / MANIFEST_NAME).read_text())
    assert head["Metadata"]["sha256"] == manifest["files"][0]["sha256"]


def test_a_damaged_object_in_the_bucket_is_refused_at_restore(
    cli: Cli,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
    bucket: str,
) -> None:
    url, _ = small_db
    location = f"s3://{bucket}/x"
    env = s3_server.env()
    backup = cli("backup", "--db", url, "--to", location, "--json", env=env)
    assert backup.code == 0, backup.stderr
    backup_id = backup.json()["backup"]["id"]
    client = s3_server.client()
    key = f"x/{backup_id}/signer.dump"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[-100] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    target = fresh_database(backup_server, "restore_damaged_s3")

    result = cli("restore", backup_id, "--repo", location, "--target-db", target, "--json", env=env)

    assert result.code == 2
    assert "fails its checksum, nothing was restored" in result.json()["error"]
    assert table_counts(target) == {}


def test_missing_bucket_exits_2_and_leaves_nothing(
    cli: Cli,
    workdir: Path,
    small_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
) -> None:
    url, _ = small_db
    missing = "no-such-bucket-here"

    result = cli("backup", "--db", url, "--to", f"s3://{missing}/p", "--json", env=s3_server.env())

    assert result.code == 2
    error = result.json()["error"]
    assert f"s3://{missing}/p" in error and "checking the bucket failed" in error
    names = [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    assert missing not in names
    staging = workdir / "state" / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_wrong_credentials_exit_2_without_showing_the_secret(
    cli: Cli, small_db: tuple[str, GeneratedDb], s3_server: S3Server, bucket: str
) -> None:
    url, _ = small_db
    wrong_secret = "not-the-secret-" + "x" * 20
    env = {**s3_server.env(), "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": wrong_secret}

    result = cli("-vv", "backup", "--db", url, "--to", f"s3://{bucket}/p", "--json", env=env)

    assert result.code == 2
    assert f"s3://{bucket}/p" in result.json()["error"]
    assert wrong_secret not in result.stdout + result.stderr
    assert s3_server.keys(bucket) == []


def put_fake_backup(s3: S3Server, bucket: str, prefix: str, backup_id: str, complete: bool) -> None:
    client = s3.client()
    client.put_object(Bucket=bucket, Key=f"{prefix}/{backup_id}/signer.dump", Body=b"PGDMP fake")
    if complete:
        body = fake_manifest(backup_id).to_bytes()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{backup_id}/{MANIFEST_NAME}", Body=body)


def test_prune_applies_retention_in_the_bucket(
    cli: Cli, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    days = [f"202512{day:02d}T030000Z" for day in range(1, 11)]  # 1 … 10 December
    for backup_id in days:
        put_fake_backup(s3_server, bucket, "p", backup_id, complete=True)
    put_fake_backup(s3_server, bucket, "p", "20251211T030000Z", complete=False)
    before = s3_server.keys(bucket)
    env = {
        **s3_server.env(),
        "SBTC_OPS_BACKUP__RETENTION__KEEP_DAILY": "3",
        "SBTC_OPS_BACKUP__RETENTION__KEEP_WEEKLY": "0",
        "SBTC_OPS_BACKUP__RETENTION__KEEP_MONTHLY": "0",
    }
    location = f"s3://{bucket}/p"

    dry = cli("prune", "--repo", location, "--dry-run", "--json", env=env)
    assert dry.code == 0, dry.stderr
    assert s3_server.keys(bucket) == before

    # A location that cannot be listed costs the bucket nothing: pruned there, named here.
    broken = tmp_path / "not-a-dir"
    broken.write_text("")
    pruned = cli("prune", "--repo", location, "--repo", str(broken), "--json", env=env)
    assert pruned.code == 1, pruned.stderr
    report, failed = pruned.json()["locations"]
    assert failed["location"] == str(broken) and "is not a directory" in failed["error"]
    assert "nothing was deleted there" in pruned.stderr
    assert report["incomplete_removed"] == ["20251211T030000Z"]
    assert sorted(report["deleted"]) == days[:7]
    kept = {key.split("/")[1] for key in s3_server.keys(bucket)}
    assert kept == set(days[7:])


# -- the upload check, for servers whose ETag is not an MD5 ---------------------------------


def head_answer(size: int, etag: str, sha256: str | None = None) -> dict[str, object]:
    """The fields of a HeadObject answer that the check reads."""
    return {
        "ContentLength": size,
        "ETag": f'"{etag}"',
        "Metadata": {"sha256": sha256} if sha256 else {},
    }


def test_upload_check_uses_a_standard_etag_and_falls_back_to_sha256_metadata(
    tmp_path: Path,
) -> None:
    path = tmp_path / "archive"
    path.write_bytes(b"x" * 1000)
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    good_etag = multipart_etag(path)

    check_uploaded("s3://b", "k", path, head_answer(size, good_etag), digest)
    with pytest.raises(StorageError, match="checksum \\(ETag\\) differs"):
        check_uploaded("s3://b", "k", path, head_answer(size, "0" * 32), digest)
    with pytest.raises(StorageError, match="999 bytes after upload, expected 1000"):
        check_uploaded("s3://b", "k", path, head_answer(999, good_etag), digest)
    # An opaque ETag (e.g. SSE-KMS): size and the SHA-256 recorded at upload decide.
    check_uploaded("s3://b", "k", path, head_answer(size, "opaque/etag", digest), digest)
    with pytest.raises(StorageError, match="SHA-256 metadata differs"):
        check_uploaded("s3://b", "k", path, head_answer(size, "opaque/etag", "0" * 64), digest)


def test_a_backup_never_reuses_an_id_already_in_the_bucket(
    cli: Cli, small_db: tuple[str, GeneratedDb], s3_server: S3Server, bucket: str
) -> None:
    """Ids are UTC seconds: the ids of the next few seconds are taken, so the backup must
    wait for a free one rather than overwrite a backup with the same id."""
    now = datetime.now(UTC)
    taken = [new_backup_id(now + timedelta(seconds=s)) for s in range(3)]
    for backup_id in taken:
        put_fake_backup(s3_server, bucket, "p", backup_id, complete=True)
    before = {
        key: s3_server.client().get_object(Bucket=bucket, Key=key)["ETag"]
        for key in s3_server.keys(bucket)
    }

    result = cli(
        "backup", "--db", small_db[0], "--to", f"s3://{bucket}/p", "--json", env=s3_server.env()
    )

    assert result.code == 0, result.stderr
    assert result.json()["backup"]["id"] not in taken
    after = {key: s3_server.client().get_object(Bucket=bucket, Key=key)["ETag"] for key in before}
    assert after == before
