"""Usage errors from the command-line parser: exit 2, in sbtc-ops' own `error:` style (not
typer's `Error:` box), with the command's usage line and where help is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.cli import CliResult


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (("config", "show", "--bogus"), "usage: sbtc-ops config show", "No such option: --bogus"),
        (("backup", "--jobs", "x"), "usage: sbtc-ops backup", "Invalid value for '--jobs'"),
        (("config", "nonsense"), "usage: sbtc-ops config", "No such command 'nonsense'"),
    ],
)
def test_usage_error_exits_2_with_usage_and_message(
    cli: Callable[..., CliResult], args: tuple[str, ...], usage: str, message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.stderr.startswith(f"error: {message}")  # as every other sbtc-ops error
    assert usage in result.stderr and "-h for help" in result.stderr
    assert "Error:" not in result.stderr and "Try '" not in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_help_shows_the_defaults_of_compress_and_jobs(cli: Callable[..., CliResult]) -> None:
    from sbtc_ops.config import BackupSettings, VerifySettings

    defaults = BackupSettings()
    backup = " ".join(cli("backup", "-h").stdout.split())
    assert f"backup.compression, {defaults.compression}" in backup
    assert f"backup.jobs, {defaults.jobs}" in backup
    verify = " ".join(cli("verify", "-h").stdout.split())
    # One setting per fact (issue 22): the CLI's default is verify.jobs, as serve's.
    assert f"verify.jobs ({VerifySettings().jobs})" in verify


def test_the_cli_starts_without_loading_what_commands_load_themselves() -> None:
    """Most tests (and every timer run) start `sbtc-ops` as a process: importing the CLI must
    not pull in the configuration model, HTTP clients or the version lookup."""
    import subprocess
    import sys

    heavy = ["sbtc_ops.config", "pydantic", "httpx", "importlib.metadata", "sbtc_ops.stacks"]
    probe = f"import sys, sbtc_ops.cli\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []
