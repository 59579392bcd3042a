"""The command line's conventions (issue 22): global options before or after the command,
`--repo` for a backup location in every command (old `--to` still accepted), one dry-run
spelling, `--json` on every command with `ok` in every document."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.cli import command_tree
from sbtc_ops.cli.helpstyle import walk
from sbtc_ops.history import JobName
from tests.support.cli import CliResult

TREE = command_tree()


def _leaves() -> list[tuple[str, object]]:
    found = []

    def visit(command: object, path: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs is None:
            found.append((" ".join(path), command))
            return
        for name, sub in sorted(subs.items()):
            visit(sub, (*path, name))

    visit(TREE, ())
    return found


LEAVES = _leaves()


def _option_names(command: object) -> set[str]:
    return {opt for param in getattr(command, "params", []) for opt in param.opts}


def _visible_option_names(command: object) -> set[str]:
    return {
        opt
        for param in getattr(command, "params", [])
        if not getattr(param, "hidden", False)
        for opt in param.opts
    }


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[p for p, _ in LEAVES])
def test_every_command_takes_json_and_the_global_options(path: str, command: object) -> None:
    names = _option_names(command)
    assert {"--json", "-c", "--config", "-v", "--verbose", "--metrics-textfile"} <= names, path


def test_the_walk_sees_the_commands_renamed() -> None:
    paths = {path for path, _ in LEAVES}
    assert {"backup", "backups", "prune", "restore", "verify", "attest verify"} <= paths
    assert {"serve", "history", "man", "upgrade-check", "config show"} <= paths


@pytest.mark.parametrize("path", ["backups", "prune", "restore", "verify", "attest verify"])
def test_commands_that_read_a_location_call_it_repo_and_hide_the_old_to(path: str) -> None:
    command = dict(LEAVES)[path]
    assert "--repo" in _visible_option_names(command)
    assert "--to" in _option_names(command) and "--to" not in _visible_option_names(command)


def test_backup_shows_repo_with_to_as_its_alias() -> None:
    assert {"--repo", "--to"} <= _visible_option_names(dict(LEAVES)["backup"])


def test_one_dry_run_spelling() -> None:
    for path, command in LEAVES:
        visible = _visible_option_names(command)
        assert "--plan-only" not in visible, path
    for path in ("prune", "init", "upgrade-check"):
        assert "--dry-run" in _visible_option_names(dict(LEAVES)[path])
    assert "--plan-only" in _option_names(dict(LEAVES)["upgrade-check"])  # still accepted


def test_global_copies_are_hidden_from_each_command_but_the_root_shows_them() -> None:
    for each in walk(TREE):
        if each is TREE:
            assert {"-c", "-v", "--json", "--metrics-textfile"} <= _visible_option_names(each)
            continue
        assert "-c" not in _visible_option_names(each)


def test_global_options_work_after_the_command(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    config = workdir / "other.toml"
    config.write_text('network = "testnet"\n')
    before = cli("-c", str(config), "--json", "config", "show")
    after = cli("config", "show", "--json", "-c", str(config))
    assert before.code == after.code == 0, (before.stderr, after.stderr)
    assert before.json()["network"] == after.json()["network"] == "testnet"
    assert before.json()["ok"] is True
    missing = cli("history", "--config", str(workdir / "absent.toml"), "--json")
    assert missing.code == 2
    assert "absent.toml" in missing.json()["error"]


def test_verbose_counts_on_both_sides_of_the_command(tmp_path: Path) -> None:
    probe = (
        "from sbtc_ops.cli import _common, command_tree\n"
        "command_tree().main(args=['-v', 'man', '-v', '--json'], standalone_mode=False)\n"
        "import sys; sys.stderr.write(f'verbose={_common.current().verbose}\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert "verbose=2" in done.stderr


def test_backups_reads_repo_and_still_accepts_to_with_a_note(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    repo = workdir / "repo"
    repo.mkdir()
    new = cli("backups", "--repo", str(repo), "--json")
    old = cli("backups", "--to", str(repo), "--json")
    assert new.code == old.code == 0, (new.stderr, old.stderr)
    assert new.json() == old.json() == {"ok": True, "backups": [], "unreachable": []}
    assert "deprecated" not in new.stderr
    assert "--to is deprecated here; use --repo" in old.stderr


@pytest.mark.parametrize(
    "args",
    [("history", "--json"), ("audit", "--list", "--json"), ("config", "show", "--json")],
    ids=" ".join,
)
def test_documents_that_lacked_ok_have_it(
    cli: Callable[..., CliResult], args: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert result.code == 0, result.stderr
    assert result.json()["ok"] is True


def test_man_json_is_one_document_with_the_page(cli: Callable[..., CliResult]) -> None:
    result = cli("man", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["ok"] is True and doc["page"].startswith(".TH SBTC-OPS 1")
    assert "\\-\\-repo" in doc["page"]


def test_once_help_lists_every_job(cli: Callable[..., CliResult]) -> None:
    text = " ".join(cli("serve", "-h").stdout.split())
    for job in JobName:
        assert job.value in text


def test_serve_json_is_for_once(cli: Callable[..., CliResult]) -> None:
    result = cli("serve", "--json")
    assert result.code == 2
    assert "--json is for serve --once" in result.json()["error"]


def test_serve_once_json_is_one_document_of_the_runs(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    # A chain check against an endpoint that refuses: a run with an outcome, no network.
    config = workdir / "sbtc-ops.toml"
    config.write_text(
        '[stacks]\nendpoints = ["http://127.0.0.1:9"]\n[serve]\nchain_check_cron = "0 * * * *"\n'
    )
    result = cli("serve", "--once", "chain-check", "--json")
    doc = result.json()
    assert set(doc) == {"ok", "runs"}
    assert [run["job"] for run in doc["runs"]] == ["chain-check"]
    assert doc["ok"] is (result.code == 0)
    assert doc["runs"][0]["outcome"] in ("ok", "problem", "error")
