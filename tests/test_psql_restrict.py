"""`\\restrict` fails closed (issue 20, item 7): a plain SQL dump is replayed only by a psql
that honours `\\restrict` (18.x, 17 ≥ 17.6, 16 ≥ 16.10, 15 ≥ 15.14, 14 ≥ 14.19,
13 ≥ 13.22). An older psql treats it as an invalid command and goes on, so a later `\\!` in the
dump would run: such a psql (e.g. through postgres.bin_dir) is refused with exit 2, naming the
binary and the versions needed. The embedded psql is accepted.

The old psql here is a script that prints an old version: what is tested is the version gate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops.backup.pgrestore import require_restrict
from sbtc_ops.errors import DependencyError
from sbtc_ops.pg import find_binaries
from sbtc_ops.pg.binaries import ALL_TOOLS, has_restrict
from tests.support.cli import clean_env, run_cli
from tests.support.pg import assert_no_postgres_left
from tests.support.verify import private_tmpdir


@pytest.mark.parametrize(
    ("version", "honoured"),
    [
        ("19.0", True),
        ("18.0", True),
        ("18", True),
        ("17.6", True),
        ("17.5", False),
        ("16.10", True),
        ("16.9", False),
        ("15.14", True),
        ("15.13", False),
        ("14.19", True),
        ("14.18", False),
        ("13.22", True),
        ("13.21", False),
        ("12.22", False),
        ("nonsense", False),
    ],
)
def test_restrict_version_floor(version: str, honoured: bool) -> None:
    assert has_restrict(version) is honoured


def fake_psql(directory: Path, version: str) -> Path:
    path = directory / "psql"
    path.write_text(f"#!/bin/sh\necho 'psql (PostgreSQL) {version}'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A postgres.bin_dir of the real binaries but for psql, which is old (0711 parents: the
    unprivileged server user must reach it)."""
    parent = private_tmpdir("psql-")
    directory = parent / "bin"
    directory.mkdir(mode=0o755)
    real = find_binaries(tool_hint="postgres").bin_dir
    for tool in ALL_TOOLS:
        if tool != "psql" and (real / tool).exists():
            (directory / tool).symlink_to(real / tool)
    try:
        yield directory
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize("version", ["16.9", "17.5", "12.3"])
def test_an_old_psql_is_refused(tmp_path: Path, version: str) -> None:
    psql = fake_psql(tmp_path, version)
    with pytest.raises(DependencyError) as refused:
        require_restrict(psql)
    message = str(refused.value)
    assert str(psql) in message and version in message
    assert "17.6" in message and "16.10" in message


@pytest.mark.parametrize("version", ["17.6", "16.10", "18.1"])
def test_a_psql_with_restrict_is_accepted(tmp_path: Path, version: str) -> None:
    require_restrict(fake_psql(tmp_path, version))


def test_the_embedded_psql_is_accepted() -> None:
    require_restrict(find_binaries(tool_hint="psql").psql)


@pytest.mark.postgres
def test_verify_refuses_a_plain_dump_with_an_old_psql_in_bin_dir(
    bin_dir: Path, tmp_path: Path
) -> None:
    fake_psql(bin_dir, "16.9")
    dump = tmp_path / "dump.sql"
    dump.write_text("-- PostgreSQL database dump\nSELECT 1;\n\\! touch /tmp/should-not-run\n")
    tmpdir = private_tmpdir()
    try:
        env = clean_env(
            tmp_path / "state", {"SBTC_OPS_POSTGRES__BIN_DIR": str(bin_dir), "TMPDIR": str(tmpdir)}
        )
        key = "02" + "11" * 32
        result = run_cli(
            "verify", str(dump), "--expected-key", key, "--json", cwd=tmp_path, env=env
        )
        assert result.code == 2, result.stderr
        assert "Traceback" not in result.stderr
        document = json.loads(result.stdout)
        assert document["ok"] is False
        assert str(bin_dir / "psql") in document["error"] and "restrict" in document["error"]
        assert_no_postgres_left(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
