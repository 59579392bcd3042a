"""One invalid manifest makes that one backup `invalid`, not the whole location unusable
(issue 13): `backups` lists it with the reason, `verify --latest` picks the newest valid
backup, `prune` removes it. Locally and in a real S3 bucket. Manifest reads are capped and
never follow a symlink or block on a FIFO."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.backup.manifest import MANIFEST_NAME
from sbtc_ops.backup.storage import MAX_MANIFEST_BYTES
from tests.support.backup import fake_manifest, write_fake_backups
from tests.support.cli import CliResult
from tests.support.s3 import S3Server

Cli = Callable[..., CliResult]

OLD, MIDDLE, NEWEST = "20260101T000000Z", "20260102T000000Z", "20260103T000000Z"


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write_fake_backups(repo, [OLD, MIDDLE, NEWEST])
    return repo


def _states(result: CliResult) -> dict[str, tuple[str, str | None]]:
    assert result.code == 0, result.stderr
    return {row["id"]: (row["state"], row["reason"]) for row in result.json()["backups"]}


def _spoil(manifest: Path, how: str) -> str:
    """Make `manifest` unusable in one way; the words its reason must contain."""
    manifest.unlink()
    if how == "truncated":
        manifest.write_text('{"id": "20260103T000000Z", "kind": "fu')
        return "not a valid sbtc-ops manifest"
    if how == "wrong-schema":
        manifest.write_text('{"hello": "world"}')
        return "not a valid sbtc-ops manifest"
    if how == "symlink":
        manifest.symlink_to("/etc/passwd")
        return "is a symbolic link"
    if how == "fifo":
        os.mkfifo(manifest)
        return "is not a regular file"
    if how == "huge":
        with manifest.open("wb") as handle:  # sparse: costs no disk
            handle.truncate(MAX_MANIFEST_BYTES + 1)
        return f"is larger than {MAX_MANIFEST_BYTES} bytes"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "wrong-schema", "symlink", "fifo", "huge"])
def test_an_invalid_manifest_spoils_only_its_backup(cli: Cli, tmp_path: Path, how: str) -> None:
    repo = _repo(tmp_path)
    expected = _spoil(repo / NEWEST / MANIFEST_NAME, how)
    listed = cli("backups", "--repo", str(repo), "--json")
    states = _states(listed)
    assert states[OLD][0] == states[MIDDLE][0] == "complete"
    state, reason = states[NEWEST]
    assert state == "invalid"
    assert reason is not None and expected in reason
    human = cli("backups", "--repo", str(repo))
    assert human.code == 0
    assert "invalid" in human.stdout
    assert f"warning: backup {NEWEST} is invalid" in human.stderr
    assert "Traceback" not in human.stderr + listed.stderr


def test_verify_latest_skips_the_invalid_backup(cli: Cli, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _spoil(repo / NEWEST / MANIFEST_NAME, "truncated")
    # The fake archives do not restore: the verdict is "corrupt" (exit 1); what matters is
    # which backup was chosen, and that the location was usable at all.
    result = cli(
        "verify", "--latest", "--repo", str(repo), "--json", "--stacks-url", "http://127.0.0.1:1"
    )
    assert result.code == 1, result.stderr
    assert result.json()["backup"] == MIDDLE


def test_prune_removes_the_invalid_backup(cli: Cli, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _spoil(repo / NEWEST / MANIFEST_NAME, "wrong-schema")
    dry = cli("prune", "--repo", str(repo), "--dry-run")
    assert dry.code == 0, dry.stderr
    assert re.search(rf"would delete +{NEWEST} +invalid", dry.stdout), dry.stdout
    assert (repo / NEWEST).exists()
    pruned = cli("prune", "--repo", str(repo), "--json")
    assert pruned.code == 0, pruned.stderr
    (report,) = pruned.json()["locations"]
    assert report["invalid_removed"] == [NEWEST]
    assert not (repo / NEWEST).exists()
    assert (repo / OLD).is_dir() and (repo / MIDDLE).is_dir()


def test_a_symlinked_manifest_target_is_never_read_or_deleted(cli: Cli, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_bytes(fake_manifest(NEWEST).to_bytes())
    (repo / NEWEST / MANIFEST_NAME).unlink()
    (repo / NEWEST / MANIFEST_NAME).symlink_to(outside)
    assert _states(cli("backups", "--repo", str(repo), "--json"))[NEWEST][0] == "invalid"
    assert cli("prune", "--repo", str(repo)).code == 0
    assert outside.read_bytes() == fake_manifest(NEWEST).to_bytes()


def test_s3_invalid_manifest(cli: Cli, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    for backup_id in (OLD, MIDDLE, NEWEST):
        client.put_object(Bucket=bucket, Key=f"p/{backup_id}/signer.dump", Body=b"PGDMP fake")
        body = fake_manifest(backup_id).to_bytes() if backup_id != NEWEST else b'{"id": tr'
        client.put_object(Bucket=bucket, Key=f"p/{backup_id}/{MANIFEST_NAME}", Body=body)
    big = b" " * (MAX_MANIFEST_BYTES + 1)
    client.put_object(Bucket=bucket, Key=f"p/{OLD}/{MANIFEST_NAME}", Body=big)
    location = f"s3://{bucket}/p"
    env = s3_server.env()
    states = _states(cli("backups", "--repo", location, "--json", env=env))
    assert states[MIDDLE][0] == "complete"
    assert states[NEWEST][0] == "invalid"
    assert "not a valid sbtc-ops manifest" in (states[NEWEST][1] or "")
    assert states[OLD][0] == "invalid"
    assert f"larger than {MAX_MANIFEST_BYTES} bytes" in (states[OLD][1] or "")
    pruned = cli("prune", "--repo", location, "--json", env=env)
    assert pruned.code == 0, pruned.stderr
    assert pruned.json()["locations"][0]["invalid_removed"] == [OLD, NEWEST]
    assert {key.split("/")[1] for key in s3_server.keys(bucket)} == {MIDDLE}
