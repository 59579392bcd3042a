"""Progress on a terminal (stderr a pty, as in an operator's shell) for backup, restore and
verify; none when stderr is piped or with --json; `-v` says steps and commands, `-vv` adds
timings. The child doing the work is frozen for a moment (SIGSTOP) so the display, polled
twice a second, is drawn mid-way whatever the machine's speed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
from tests.support.backup import fresh_database
from tests.support.cli import CliResult
from tests.support.pg import SourceServer
from tests.support.s3 import S3Server
from tests.support.terminal import ThrottledProxy, hold, run_on_terminal
from tests.support.verify import copy_schema_references

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

Cli = Callable[..., CliResult]
SIZE = r"[0-9.]+ (B|KiB|MiB|GiB)"
ESCAPE = "\x1b["


@pytest.fixture(scope="module")
def taken(tmp_path_factory: pytest.TempPathFactory, medium_db: tuple[str, GeneratedDb]) -> Path:
    """One backup of the medium database (taken piped, no progress), for restore and verify."""
    from tests.support.cli import clean_env, run_cli

    root = tmp_path_factory.mktemp("taken")
    repo = root / "repo"
    result = run_cli(
        "backup", "--db", medium_db[0], "--to", str(repo), "--json",
        cwd=root, env=clean_env(root / "state"),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return repo / str(result.json()["backup"]["id"])


def with_reference(taken: Path, state: Path) -> None:
    """The schema reference `taken`'s backup recorded, in `state` (a run of its own)."""
    copy_schema_references(taken.parent.parent / "state", state)


def test_backup_shows_bytes_written_then_a_bar_and_eta(
    tmp_path: Path, workdir: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    repo, state = tmp_path / "r", tmp_path / "state"
    args = ("backup", "--db", medium_db[0], "--to", str(repo))
    first = run_on_terminal(
        *args, cwd=workdir, state_dir=state, while_running=hold("pg_dump", "--snapshot=")
    )
    assert first.code == 0, first.screen
    assert re.search(rf"pg_dump .*{SIZE}", first.screen), first.screen
    assert "0:00:0" in first.screen  # elapsed
    assert not re.search(r"\d (kB|MB)\b", first.screen)  # IEC units only
    assert first.stdout.startswith("backup ") and ESCAPE not in first.stdout  # the report
    # With an earlier backup, its size is the estimate: a bar with a total and an ETA.
    second = run_on_terminal(
        *args, cwd=workdir, state_dir=state, while_running=hold("pg_dump", "--snapshot=")
    )
    assert second.code == 0, second.screen
    assert re.search(rf"pg_dump .*{SIZE}/{SIZE}", second.screen), second.screen
    assert "eta" in second.screen


def test_restore_shows_how_much_of_the_archive_was_read(
    workdir: Path, tmp_path: Path, taken: Path, backup_server: SourceServer
) -> None:
    target = fresh_database(backup_server, "progress_restore")
    with_reference(taken, tmp_path / "state")
    run = run_on_terminal(
        "restore", str(taken), "--target-db", target,
        cwd=workdir, state_dir=tmp_path / "state", while_running=hold("pg_restore", "--dbname="),
    )  # fmt: skip
    assert run.code == 0, run.screen
    assert re.search(rf"pg_restore .*{SIZE}/{SIZE}", run.screen), run.screen
    assert "eta" in run.screen


def test_verify_shows_its_phases(
    workdir: Path, tmp_path: Path, taken: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    key = medium_db[1].newest_verified_key.hex()
    with_reference(taken, tmp_path / "state")
    run = run_on_terminal(
        "verify", str(taken), "--expected-key", key,
        cwd=workdir, state_dir=tmp_path / "state", while_running=hold("pg_restore", "--dbname="),
    )  # fmt: skip
    assert run.code == 0, run.screen + run.stdout
    assert "verify: restore" in run.screen
    assert re.search(r"verify: restore .*\b[1-7]/8\b", run.screen), run.screen
    assert "verdict: match" in run.stdout


def test_nothing_drawn_with_json_on_a_terminal(
    workdir: Path, tmp_path: Path, taken: Path, medium_db: tuple[str, GeneratedDb]
) -> None:
    key = medium_db[1].newest_verified_key.hex()
    with_reference(taken, tmp_path / "state")
    run = run_on_terminal(
        "verify", str(taken), "--expected-key", key, "--json",
        cwd=workdir, state_dir=tmp_path / "state", while_running=hold("pg_restore", "--dbname="),
    )  # fmt: skip
    assert run.code == 0, run.screen
    assert "verify" not in run.screen and "eta" not in run.screen, run.screen
    assert run.stdout.lstrip().startswith("{")


def test_nothing_drawn_when_piped_and_verbose_says_steps_and_commands(
    cli: Cli,
    workdir: Path,
    taken: Path,
    medium_db: tuple[str, GeneratedDb],
    backup_server: SourceServer,
) -> None:
    key = medium_db[1].newest_verified_key.hex()
    with_reference(taken, workdir / "state")
    quiet = cli("verify", str(taken), "--expected-key", key)
    assert quiet.code == 0, quiet.stderr
    assert quiet.stderr == "" or (ESCAPE not in quiet.stderr and "eta" not in quiet.stderr)

    verbose = cli("-v", "verify", str(taken), "--expected-key", key)
    assert verbose.code == 0, verbose.stderr
    assert ESCAPE not in verbose.stderr and "eta" not in verbose.stderr
    for phase in ("locate", "cluster", "restore", "checks", "amcheck"):
        assert f"verify: {phase}" in verbose.stderr
    assert re.search(r"^run: .*pg_restore .*--dbname=", verbose.stderr, re.MULTILINE)
    # The quiet run kept the cluster template (pg/template.py): this one copies it (a
    # sandbox without its own view has no templates: initdb again).
    # (The copy's command line is a multi-line `sh -c` script; its arguments end it.)
    made = (
        r"^' copy-template \S*/cluster-templates/"
        if Sandbox(resolve_run_as()).mount_view
        else r"^run: .*initdb"
    )
    assert re.search(made, verbose.stderr, re.MULTILINE), verbose.stderr
    assert " took " not in verbose.stderr

    timed = cli("-vv", "restore", str(taken), "--target-db",
                fresh_database(backup_server, "progress_vv"))  # fmt: skip
    assert timed.code == 0, timed.stderr
    assert re.search(r"^\[ *[0-9]+\.[0-9]{2}s\] run: .*pg_restore", timed.stderr, re.MULTILINE)
    assert backup_server.signer_password not in timed.stderr  # the URL's password is never shown


@pytest.mark.s3
def test_s3_upload_and_download_show_bytes(
    workdir: Path,
    tmp_path: Path,
    medium_db: tuple[str, GeneratedDb],
    backup_server: SourceServer,
    s3_server: S3Server,
) -> None:
    location = f"s3://{s3_server.create_bucket()}/p"
    state = tmp_path / "state"
    with ThrottledProxy(s3_server.port, bytes_per_s=4 * 1024 * 1024) as proxy:
        env = {**s3_server.env(), "SBTC_OPS_BACKUP__S3__ENDPOINT_URL": proxy.endpoint_url}
        up = run_on_terminal(
            "backup", "--db", medium_db[0], "--to", location, cwd=workdir, state_dir=state, env=env
        )
        assert up.code == 0, up.screen + up.stdout
        assert re.search(rf"upload to {location} .*{SIZE}/{SIZE}", up.screen), up.screen
        backup_id = up.stdout.split()[1]
        target = fresh_database(backup_server, "progress_from_s3")
        down = run_on_terminal(
            "restore", backup_id, "--repo", location, "--target-db", target,
            cwd=workdir, state_dir=state, env=env,
        )  # fmt: skip
        assert down.code == 0, down.screen + down.stdout
        assert re.search(rf"download from {location} .*{SIZE}/{SIZE}", down.screen), down.screen
