"""Edges of the command line (issue 13): user text is never Rich markup, --json prints its
error document for usage errors and signals, a closed stdout is not "problem found"."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.backup import write_fake_backups
from tests.support.cli import CliResult, clean_env, sbtc_ops_executable

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

Cli = Callable[..., CliResult]

MARKUP = ("[/x]", "[bold]x", "[red]a[/red][/]")


def _no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "MarkupError" not in result.stderr, result.stderr


@pytest.mark.parametrize("text", MARKUP)
def test_markup_in_arguments_is_printed_literally(cli: Cli, text: str) -> None:
    for args, shown in (
        (("verify", text), f"'{text}' is neither an existing file"),
        (("audit", "--root", text), f"--root {text}: not a directory"),
        (("key", "check", "--key-file", text), f"key file {text}:"),
        (("--config", text, "config", "show"), f"config file {text} does not exist"),
        (("serve", "--once", text), f"unknown or disabled job {text};"),
    ):
        result = cli(*args)
        _no_traceback(result)
        assert result.code == 2, (args, result.stderr)
        assert shown in result.stderr, (args, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr


def test_markup_in_data_job_summaries_and_history(cli: Cli, workdir: Path) -> None:
    """A job summary carries user data (here a backup directory's name) to `serve --once`
    and `history`; both print it as it is."""
    blocker = workdir / "[bold]file"
    blocker.write_text("")
    (workdir / "sbtc-ops.toml").write_text(
        f'[db]\nurl = "postgresql://u@127.0.0.1:1/signer"\n[backup]\nlocal_dir = "{blocker}/[/x]"\n'
    )
    once = cli("serve", "--once", "backup")
    _no_traceback(once)
    assert once.code == 2
    assert f"backup: error cannot create backup directory {blocker}/[/x]" in once.stderr
    history = cli("history")
    _no_traceback(history)
    assert history.code == 0
    assert "[bold]file/[/x]" in history.stdout.replace("\n", "").replace(" ", "")
    listed = cli("history", "--json")
    assert f"{blocker}/[/x]" in listed.json()["runs"][0]["summary"]


def test_markup_in_backup_listing(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "[bold]repo[/x]"
    write_fake_backups(repo, ["20260101T000000Z"])
    result = cli("backups", "--repo", str(repo))
    _no_traceback(result)
    assert result.code == 0
    assert "[bold]repo[/x]" in result.stdout.replace("\n", "").replace(" ", "")


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "--fail-on", "bogus", "--json"),
        ("verify", "--json", "--bogus"),
        ("history", "--limit", "0", "--json"),
        ("backup", "--json", "--to"),
    ],
)
def test_json_usage_errors_print_the_error_document(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2, result.stderr
    _no_traceback(result)
    doc = result.json()  # exactly one JSON document on stdout
    assert doc["ok"] is False
    assert doc["error"]
    assert result.stderr.startswith("error: ")  # the human message stays on stderr


def test_usage_error_without_json_keeps_stdout_empty(cli: Cli) -> None:
    result = cli("verify", "--bogus")
    assert result.code == 2
    assert result.stdout == ""
    assert "No such option: --bogus" in result.stderr


def test_json_after_double_dash_is_not_the_option(cli: Cli) -> None:
    result = cli("verify", "--bogus", "--", "--json")
    assert result.code == 2
    assert result.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_prints_the_json_error_document(workdir: Path, signum: int) -> None:
    """A Stacks endpoint that accepts and never answers keeps `chain` busy until signalled."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [sbtc_ops_executable(), "chain", "aggregate-key", "--json", "--stacks-url", url],
            cwd=workdir,
            env=clean_env(workdir / "state", {"SBTC_OPS_STACKS__TIMEOUT_S": "60"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            silent.settimeout(60)
            conn, _ = silent.accept()  # the request is in flight: the command is running
            proc.send_signal(signum)
            stdout, stderr = proc.communicate(timeout=60)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    assert json.loads(stdout) == {"ok": False, "error": "interrupted"}
    assert "interrupted" in stderr
    assert "Traceback" not in stderr


def _run_with_closed_stdout(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader has already gone: every write gets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sbtc_ops_executable(), *args],
            cwd=cwd,
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_closed_stdout_keeps_the_commands_exit_status(workdir: Path) -> None:
    env = clean_env(workdir / "state")
    code, stderr = _run_with_closed_stdout(["clarity", "decode", "0x03"], workdir, env)
    assert (code, "Traceback" in stderr) == (0, False), stderr
    # a command that finds a problem still says so
    code, stderr = _run_with_closed_stdout(["clarity", "decode", "0xff"], workdir, env)
    assert code == 2
    assert "Traceback" not in stderr


def test_backup_piped_into_a_closed_reader_exits_0(
    small_db: tuple[str, GeneratedDb], workdir: Path, tmp_path: Path
) -> None:
    url, _ = small_db
    repo = tmp_path / "repo"
    env = clean_env(workdir / "state")
    code, stderr = _run_with_closed_stdout(["backup", "--db", url, "--to", str(repo)], workdir, env)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    backups = [p for p in repo.iterdir() if (p / "manifest.json").is_file()]
    assert len(backups) == 1
