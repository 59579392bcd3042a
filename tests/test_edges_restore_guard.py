"""The live-database guard of `restore` cannot be bypassed by spelling the live server
differently (issue 13): host case, loopback aliases, Unix sockets, leading zeros in the port,
multi-host lists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.backup.sameserver import same_database
from sbtc_ops.backup.source import parse_target
from tests.support.cli import CliResult

Cli = Callable[..., CliResult]

LIVE = "postgresql://signer:pw@127.0.0.1:5499/signer"

SAME = [
    "postgresql://signer@LOCALHOST:05499/signer",
    "postgresql://signer@localhost.:5499/signer",
    "postgresql://signer@LocalHost:+5499/signer",
    "postgresql://signer@[::1]:5499/signer",
    "postgresql://signer@127.0.0.2:5499/signer",
    "postgresql://signer@0.0.0.0:5499/signer",
    "postgresql:///signer?host=/run/postgresql&port=5499",
    "postgresql://signer@db.example.invalid:1,localhost:5499/signer",
    "host=LOCALHOST port=005499 dbname=signer user=someone",
    "host=127.0.0.1 hostaddr=127.0.0.1 port=5499 dbname=signer",
]

DIFFERENT = [
    "postgresql://signer@localhost:5432/signer",
    "postgresql://signer@localhost:5499/restored",
    "postgresql://signer@localhost:5499/SIGNER",  # database names are case-sensitive
    "postgresql://signer@db.example.invalid:5499/signer",
]


@pytest.mark.parametrize("url", SAME)
def test_spellings_of_the_live_database_are_the_same(url: str) -> None:
    assert same_database(parse_target(url).params, parse_target(LIVE).params)


@pytest.mark.parametrize("url", DIFFERENT)
def test_other_databases_are_not(url: str) -> None:
    assert not same_database(parse_target(url).params, parse_target(LIVE).params)


@pytest.mark.parametrize("target", ["postgresql://signer@LOCALHOST:05499/signer", SAME[6]])
def test_restore_refuses_the_live_database_however_spelled(
    cli: Cli, workdir: Path, target: str
) -> None:
    (workdir / "sbtc-ops.toml").write_text(f'[db]\nurl = "{LIVE}"\n')
    result = cli("restore", "20260101T000000Z", "--target-db", target)
    assert result.code == 2, result.stderr
    assert "is the live signer database from the configuration" in result.stderr
    assert "--overwrite-live-db signer" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw" not in result.stderr.replace("pwd", "")
