"""`\\restrict` fails closed (issue 20, item 7): a plain SQL dump is replayed only by a psql
that honours `\\restrict` (18.x, 17 ≥ 17.6, 16 ≥ 16.10, 15 ≥ 15.14, 14 ≥ 14.19,
13 ≥ 13.22). An older psql treats it as an invalid command and goes on, so a later `\\!` in the
dump would run: such a psql (e.g. through postgres.bin_dir) is refused with exit 2, naming the
binary and the versions needed. The embedded psql is accepted.

The old psql here is a script that prints an old version: what is tested is the version gate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sbtc_ops.backup.archive import PreparedArchive
from sbtc_ops.backup.pgrestore import require_restrict, restore_argv
from sbtc_ops.errors import DependencyError
from sbtc_ops.pg import find_binaries
from sbtc_ops.pg.binaries import PgBinaries, has_restrict


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


def test_restore_argv_refuses_plain_sql_with_the_bin_dir_psql_too_old(tmp_path: Path) -> None:
    """The one place both `verify` and `restore` build psql's command line: a postgres.bin_dir
    whose psql predates \\restrict is refused for plain SQL, and not for a custom archive."""
    fake_psql(tmp_path, "16.9")
    binaries = PgBinaries(bin_dir=tmp_path, major_version=16, version="16.9", source="configured")
    plain = PreparedArchive(tmp_path / "dump.sql", "plain")
    with pytest.raises(DependencyError) as refused:
        restore_argv(binaries, plain, "dbname=x", jobs=1, strict=False)
    assert refused.value.exit_code == 2
    assert str(tmp_path / "psql") in str(refused.value)
    custom = PreparedArchive(tmp_path / "dump.custom", "custom")
    assert restore_argv(binaries, custom, "dbname=x", jobs=1, strict=False)[0].endswith(
        "pg_restore"
    )
