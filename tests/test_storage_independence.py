"""One broken storage never costs the others (issue 24, item 2).

An S3 endpoint that accepts connections and never answers (a local listener that never
reads), one that refuses them (a closed port), a bucket that does not exist and credentials
the real S3 server (weed) rejects: the backup is still written to every reachable location
and reported per location (exit 1, the failure named); `backups`, `prune` and `verify
--latest` work on what is reachable and name what is not. Every S3 operation has a wall
clock deadline (backup.s3.timeout_s), so a silent endpoint cannot hold a run.

The subprocess timeout of each run is a guard against a hang, not a timed assertion.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sbtc_ops.pg.cluster import free_tcp_port
from tests.support.backup import write_fake_backups
from tests.support.cli import CliResult
from tests.support.s3 import S3Server

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]
GUARD_S = 120  # far above the 2 s deadline: only a hang reaches it


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT that accepts connections (the kernel completes them from the
    backlog) and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "SBTC_OPS_BACKUP__S3__ENDPOINT_URL": endpoint,
        "SBTC_OPS_BACKUP__S3__ACCESS_KEY_ID": "test",
        "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": "not-a-real-secret",
        "SBTC_OPS_BACKUP__S3__TIMEOUT_S": "2",
    }


def failed_locations(result: CliResult) -> dict[str, str]:
    return {entry["location"]: entry["error"] for entry in result.json()["failed_locations"]}


@pytest.mark.parametrize("endpoint_kind", ["silent", "refusing"])
def test_a_backup_reaches_every_reachable_location_when_s3_does_not_answer(
    cli: Cli,
    tmp_path: Path,
    small_db: tuple[str, GeneratedDb],
    silent_endpoint: str,
    endpoint_kind: str,
) -> None:
    endpoint = (
        silent_endpoint if endpoint_kind == "silent" else f"http://127.0.0.1:{free_tcp_port()}"
    )
    first, second = tmp_path / "first", tmp_path / "second"
    bucket = "s3://signer-backups/host-1"
    result = cli(
        "backup", "--db", small_db[0], "--dkg-only", "--json",
        "--to", str(first), "--to", bucket, "--to", str(second),
        env=s3_env(endpoint), timeout=GUARD_S,
    )  # fmt: skip
    assert result.code == 1, result.stderr  # stored, not everywhere: a problem found
    doc = result.json()
    assert doc["ok"] is False
    backup_id = doc["backup"]["id"]
    assert doc["locations"] == [str(first / backup_id), str(second / backup_id)]
    failure = failed_locations(result)[bucket]
    if endpoint_kind == "silent":
        assert "did not finish within 2 s" in failure and "backup.s3.timeout_s" in failure
    else:
        assert "checking the bucket failed" in failure
    for repo in (first, second):
        assert (repo / backup_id / "manifest.json").is_file()
    assert f"error: {bucket}" in result.stderr and "Traceback" not in result.stderr


def test_listing_and_pruning_work_on_what_is_reachable(
    cli: Cli, tmp_path: Path, silent_endpoint: str
) -> None:
    repo = tmp_path / "repo"
    write_fake_backups(repo, ["20251201T030000Z", "20251202T030000Z"], ["20251203T030000Z"])
    bucket = "s3://signer-backups/host-1"
    env = s3_env(silent_endpoint)

    listed = cli(
        "backups", "--repo", str(repo), "--repo", bucket, "--json", env=env, timeout=GUARD_S
    )
    assert listed.code == 1, listed.stderr
    doc = listed.json()
    assert {row["id"] for row in doc["backups"]} == {
        "20251201T030000Z",
        "20251202T030000Z",
        "20251203T030000Z",
    }
    (unreachable,) = doc["unreachable"]
    assert unreachable["location"] == bucket and "did not finish within" in unreachable["error"]
    text = cli("backups", "--repo", str(repo), "--repo", bucket, env=env, timeout=GUARD_S)
    assert text.code == 1 and "20251202T030000Z" in text.stdout
    assert "its backups are not listed" in " ".join(text.stderr.split())

    pruned = cli("prune", "--repo", str(repo), "--repo", bucket, "--json", env=env, timeout=GUARD_S)
    assert pruned.code == 1, pruned.stderr
    local, remote = pruned.json()["locations"]
    assert local["incomplete_removed"] == ["20251203T030000Z"]
    assert remote["location"] == bucket and remote["deleted"] == []
    assert sorted(p.name for p in repo.iterdir()) == ["20251201T030000Z", "20251202T030000Z"]


def test_restore_finds_the_backup_in_a_reachable_location(
    cli: Cli,
    tmp_path: Path,
    backup_server: Any,
    small_db: tuple[str, GeneratedDb],
    silent_endpoint: str,
) -> None:
    """`restore`/`verify` look a backup up location by location: the silent bucket, named
    first, is given up at its deadline and the local copy is used."""
    repo = tmp_path / "repo"
    taken = cli("backup", "--db", small_db[0], "--dkg-only", "--to", str(repo), "--json")
    assert taken.code == 0, taken.stderr
    backup_id = taken.json()["backup"]["id"]
    bucket = "s3://signer-backups/host-1"
    target = backup_server.create_signer_database("restore_reachable")
    restored = cli(
        "restore", backup_id, "--target-db", target, "--repo", bucket, "--repo", str(repo), "--json",
        env=s3_env(silent_endpoint), timeout=GUARD_S,
    )  # fmt: skip
    assert restored.code == 0, restored.stderr
    assert restored.json()["backup"] == backup_id
    assert bucket in restored.stderr and "looking in the other locations" in restored.stderr

    missing = cli(
        "restore", "20200101T000000Z", "--target-db", target, "--repo", bucket, "--repo", str(repo),
        "--json", env=s3_env(silent_endpoint), timeout=GUARD_S,
    )  # fmt: skip
    assert missing.code == 2
    error = missing.json()["error"]
    assert "not found in the reachable locations" in error and bucket in error


def test_no_such_bucket_and_rejected_credentials_are_errors_naming_the_location(
    cli: Cli,
    tmp_path: Path,
    small_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
) -> None:
    bucket = s3_server.create_bucket("independent")
    missing = "s3://no-such-bucket-here/signer"
    env = s3_server.env()
    for command in ("backups", "prune"):
        result = cli(command, "--repo", missing, "--json", env=env, timeout=GUARD_S)
        assert result.code == 2, result.stdout
        assert missing in result.json()["error"] and "NoSuchBucket" in result.json()["error"]
    wrong_secret = {**env, "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": "wrong-secret-value"}
    denied = cli("backups", "--repo", f"s3://{bucket}/x", "--json", env=wrong_secret)
    assert denied.code == 2 and f"s3://{bucket}/x" in denied.json()["error"]
    assert "wrong-secret-value" not in denied.stdout + denied.stderr

    # A backup to the real bucket, a missing one and a local directory: two copies, one
    # failure named.
    repo = tmp_path / "repo"
    result = cli(
        "backup", "--db", small_db[0], "--dkg-only", "--json",
        "--to", str(repo), "--to", missing, "--to", f"s3://{bucket}/signer",
        env=env, timeout=GUARD_S,
    )  # fmt: skip
    assert result.code == 1, result.stderr
    backup_id = result.json()["backup"]["id"]
    assert result.json()["locations"] == [
        str(repo / backup_id),
        f"s3://{bucket}/signer/{backup_id}",
    ]
    assert "NoSuchBucket" in failed_locations(result)[missing]
    assert f"signer/{backup_id}/manifest.json" in s3_server.keys(bucket)
