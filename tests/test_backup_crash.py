"""kill -9 of `sbtc-ops backup` at several points: during the dump, during the upload, just
before the manifest. Nothing complete-looking is left, earlier backups stay intact and still
restore, the next backup succeeds, and `prune` removes what the killed one left."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.backup import (
    fresh_database,
    kill_if_alive,
    sbtc_ops_popen,
    table_counts,
    wait_for_dump,
    wait_gone,
)
from tests.support.cli import CliResult
from tests.support.pg import SourceServer
from tests.support.s3 import FreezingProxy, S3Server

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]


def process_status(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return " ".join(
        line for line in lines if line.startswith(("State", "PPid", "SigPnd", "ShdPnd"))
    )


def states(cli: Cli, location: str, env: dict[str, str] | None = None) -> dict[str, str]:
    result = cli("backups", "--repo", location, "--json", env=env)
    assert result.code == 0, result.stderr
    return {row["id"]: row["state"] for row in result.json()["backups"]}


def backup(cli: Cli, url: str, location: str, env: dict[str, str] | None = None) -> str:
    result = cli("backup", "--db", url, "--to", location, "--json", env=env)
    assert result.code == 0, result.stderr
    backup_id: str = result.json()["backup"]["id"]
    return backup_id


def assert_restores(
    cli: Cli, server: SourceServer, source_url: str, ref: str, *extra: str, env: Any = None
) -> None:
    target = fresh_database(server, f"restore_{ref.lower()}")
    result = cli("restore", ref, "--target-db", target, "--json", *extra, env=env)
    assert result.code == 0, result.stderr
    assert table_counts(target) == table_counts(source_url)


def test_kill_during_the_dump(
    cli: Cli,
    tmp_path: Path,
    workdir: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    medium_db: tuple[str, GeneratedDb],
) -> None:
    # The killed backup dumps the medium database (long enough to catch its pg_dump); the
    # others the small one (quick to take and restore).
    small_url, _ = small_db
    repo = tmp_path / "repo"
    earlier = backup(cli, small_url, str(repo))
    earlier_files = {p: p.read_bytes() for p in (repo / earlier).iterdir()}

    proc = sbtc_ops_popen(
        "backup", "--db", medium_db[0], "--to", str(repo), state_dir=workdir / "state", cwd=workdir
    )
    pg_dump = wait_for_dump(proc)
    os.kill(pg_dump, signal.SIGSTOP)  # hold the dump mid-way, then kill sbtc-ops there
    try:
        partials = [p.name for p in repo.iterdir() if p.name.endswith(".partial")]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        gone = wait_gone(pg_dump)
        assert gone, f"pg_dump outlived the killed backup: {process_status(pg_dump)}"
    finally:
        kill_if_alive(pg_dump)
    assert len(partials) == 1
    killed = partials[0].removesuffix(".partial")
    assert states(cli, str(repo)) == {earlier: "complete", killed: "incomplete"}
    assert {p: p.read_bytes() for p in (repo / earlier).iterdir()} == earlier_files
    assert_restores(cli, backup_server, small_url, earlier, "--repo", str(repo))

    following = backup(cli, small_url, str(repo))
    pruned = cli("prune", "--repo", str(repo), "--json")
    assert pruned.code == 0, pruned.stderr
    assert pruned.json()["locations"][0]["incomplete_removed"] == [killed]
    # `earlier` goes too: the daily rule keeps the newest backup of the day.
    assert [p.name for p in repo.iterdir()] == [following]
    assert (repo / following / "manifest.json").is_file()


def test_a_backup_without_its_manifest_is_incomplete_and_pruned(
    cli: Cli, tmp_path: Path, small_db: tuple[str, GeneratedDb]
) -> None:
    """The state a kill between the rename and the manifest write leaves (a window too short
    to hit from outside): the files are all there, the manifest is not."""
    url, _ = small_db
    repo = tmp_path / "repo"
    first = backup(cli, url, str(repo))
    cut = "20200101T000000Z"
    shutil.copytree(repo / first, repo / cut)
    (repo / cut / "manifest.json").unlink()

    assert states(cli, str(repo)) == {first: "complete", cut: "incomplete"}
    pruned = cli("prune", "--repo", str(repo), "--json")
    assert pruned.json()["locations"][0]["incomplete_removed"] == [cut]
    assert [p.name for p in repo.iterdir()] == [first]


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket("crash")


@pytest.fixture
def proxy_factory(s3_server: S3Server) -> Iterator[Callable[[bytes], FreezingProxy]]:
    proxies: list[FreezingProxy] = []

    def make(trigger: bytes) -> FreezingProxy:
        proxies.append(FreezingProxy(s3_server.port, trigger))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def kill_when_frozen(
    proxy: FreezingProxy, url: str, location: str, workdir: Path, env: dict[str, str]
) -> None:
    """Start a backup to S3 through `proxy`, kill -9 it once the proxy froze its traffic."""
    proc = sbtc_ops_popen(
        "backup",
        "--db",
        url,
        "--to",
        location,
        state_dir=workdir / "state",
        cwd=workdir,
        env={
            **env,
            "SBTC_OPS_BACKUP__S3__ENDPOINT_URL": proxy.endpoint_url,
            # Uncompressed, the archive (> 16 MiB) goes up in several parts.
            "SBTC_OPS_BACKUP__COMPRESSION": "none",
        },
    )
    try:
        proxy.wait_frozen()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def test_kill_during_the_s3_upload_and_before_the_manifest(
    cli: Cli,
    workdir: Path,
    backup_server: SourceServer,
    small_db: tuple[str, GeneratedDb],
    medium_db: tuple[str, GeneratedDb],
    s3_server: S3Server,
    bucket: str,
    proxy_factory: Callable[[bytes], FreezingProxy],
) -> None:
    small_url, _ = small_db
    location = f"s3://{bucket}/signer"
    direct = s3_server.env()
    earlier = backup(cli, small_url, location, env=direct)
    earlier_keys = s3_server.keys(bucket, f"signer/{earlier}/")

    # Mid-multipart: the archive never completes, so nothing of it is listed.
    kill_when_frozen(proxy_factory(b"partNumber="), medium_db[0], location, workdir, direct)
    assert states(cli, location, env=direct) == {earlier: "complete"}
    # Every file uploaded, the manifest not: listed, as incomplete.
    kill_when_frozen(proxy_factory(b"manifest.json"), medium_db[0], location, workdir, direct)
    listed = states(cli, location, env=direct)
    killed = sorted(set(listed) - {earlier})
    assert listed == {earlier: "complete", **{backup_id: "incomplete" for backup_id in killed}}
    assert len(killed) == 1
    assert s3_server.keys(bucket, f"signer/{earlier}/") == earlier_keys
    assert_restores(cli, backup_server, small_url, earlier, "--repo", location, env=direct)

    following = backup(cli, small_url, location, env=direct)
    staging = workdir / "state" / "staging"
    assert not staging.exists() or list(staging.iterdir()) == [], "stale staging left behind"
    # The multipart upload cut short is invisible in listings but holds its parts.
    assert len(unfinished_uploads(s3_server, bucket)) == 1
    dry = cli("prune", "--repo", location, "--dry-run", "--json", env=direct)
    assert dry.json()["locations"][0]["abandoned_uploads"] == unfinished_uploads(s3_server, bucket)
    pruned = cli("prune", "--repo", location, "--json", env=direct)
    assert pruned.code == 0, pruned.stderr
    report = pruned.json()["locations"][0]
    assert report["incomplete_removed"] == killed and len(report["abandoned_uploads"]) == 1
    assert unfinished_uploads(s3_server, bucket) == []
    assert states(cli, location, env=direct) == {following: "complete"}


def unfinished_uploads(s3: S3Server, bucket: str) -> list[str]:
    uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(upload["Key"] for upload in uploads)


def test_sigterm_during_the_dump_cleans_up(
    cli: Cli, tmp_path: Path, workdir: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    """A polite stop (systemd, docker stop) unwinds: pg_dump stopped, partial files removed."""
    repo = tmp_path / "repo"
    proc = sbtc_ops_popen(
        "backup", "--db", medium_db[0], "--to", str(repo), state_dir=workdir / "state", cwd=workdir
    )
    pg_dump = wait_for_dump(proc)
    os.kill(pg_dump, signal.SIGSTOP)  # mid-dump, deterministically
    try:
        assert [p.name.endswith(".partial") for p in repo.iterdir()] == [True]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert wait_gone(pg_dump), f"pg_dump outlived the stopped backup: {process_status(pg_dump)}"
    finally:
        kill_if_alive(pg_dump)

    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert list(repo.iterdir()) == []
    assert states(cli, str(repo)) == {}
