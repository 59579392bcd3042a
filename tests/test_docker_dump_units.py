"""The argv of a backup through the DB container: no secret in it, pg_dump's options as the
container's pg_dump version takes them."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from sbtc_ops.backup.docker_dump import STDIN_SECRET_SCRIPT, compress_argument, exec_argv
from sbtc_ops.backup.dump import DumpOptions
from sbtc_ops.backup.source import parse_target


@pytest.mark.parametrize(
    ("compression", "major", "expected"),
    [
        ("zstd:1", 16, "zstd:1"),
        ("gzip:6", 17, "gzip:6"),
        ("gzip:1", 15, "1"),
        ("zstd:3", 15, "3"),
        ("none", 14, "0"),
        ("lz4", 15, "6"),
        ("5", 13, "5"),
    ],
)
def test_compression_for_older_pg_dump(compression: str, major: int, expected: str) -> None:
    assert compress_argument(compression, major) == expected


def test_exec_argv_carries_no_secret() -> None:
    target = parse_target("postgresql://signer:s3cr3t-pw@postgres:5433/signer_db")
    options = DumpOptions("custom", "gzip:1", 1, "00000003-0000001B-1", ("sbtc_signer.x",))
    pg_dump = ("/usr/lib/postgresql/15/bin/pg_dump", "15.18")
    argv = exec_argv("postgres", pg_dump, target, options, docker="docker")
    assert "s3cr3t-pw" not in " ".join(argv)
    assert argv[:8] == ["docker", "exec", "-i", "postgres", "sh", "-c", STDIN_SECRET_SCRIPT, "sh"]
    assert "-e" not in argv and "--env" not in argv
    assert "--compress=1" in argv and "--snapshot=00000003-0000001B-1" in argv
    assert "--exclude-table-data=sbtc_signer.x" in argv
    assert argv[-1] == (  # what the container's pg_dump connects to: no password in it
        "host=127.0.0.1 port=5433 user=signer dbname=signer_db application_name=sbtc-ops"
    )


def test_hostile_names_stay_one_conninfo_value() -> None:
    target = parse_target("postgresql://a%20b:pw@postgres/x%27%20password%3Dy")
    options = DumpOptions("custom", "gzip:1", 1, "snap", ())
    argv = exec_argv("db", ("pg_dump", "16.4"), target, options, docker="docker")
    assert conninfo_to_dict(argv[-1]) == {
        "host": "127.0.0.1",
        "port": "5432",
        "user": "a b",
        "dbname": "x' password=y",
        "application_name": "sbtc-ops",
    }
    assert "pw" not in " ".join(argv)
