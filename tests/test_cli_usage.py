"""Usage errors from the command-line parser: exit 2, the parser's usage line and message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.cli import CliResult


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (("config", "show", "--bogus"), "Usage: sbtc-ops config show", "No such option: --bogus"),
        (("backup", "--jobs", "x"), "Usage: sbtc-ops backup", "Invalid value for '--jobs'"),
        (("config", "nonsense"), "Usage: sbtc-ops config", "No such command 'nonsense'"),
    ],
)
def test_usage_error_exits_2_with_usage_and_message(
    cli: Callable[..., CliResult], args: tuple[str, ...], usage: str, message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert usage in result.stderr and message in result.stderr
    assert "Try '" in result.stderr  # the parser's hint to -h
    assert result.stdout == "" and "Traceback" not in result.stderr
