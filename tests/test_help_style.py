"""Every command's `--help` uses one notation (src/sbtc_ops/cli/helpstyle.py): the whole
command tree is walked, so a new command or option is checked without being listed here."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

import pytest
from typer.core import TyperArgument, TyperOption

from sbtc_ops.cli import app
from sbtc_ops.cli.helpstyle import option_placeholder, styled_command
from tests.support.cli import CliResult

# What typer prints by default and the convention forbids.
FORBIDDEN = {
    "type in angle brackets": re.compile(r"<[a-z][^>]*>"),
    "argument in braces": re.compile(r"\{[A-Za-z_]+\}"),
    "doubled brackets": re.compile(r"\[\["),
    "range as a formula": re.compile(r"\[?[0-9.]*<?=?x[<>]=?"),
    "python type": re.compile(r"list\[|\bstr\b>|<int"),
}
PLACEHOLDER = re.compile(r"^([A-Z][A-Z0-9_]*(:[A-Z]+|\[:[A-Z]+\])?|[a-z0-9-]+(\|[a-z0-9-]+)+)$")
USAGE_ARGUMENT = re.compile(r"^(\[[A-Z][A-Z0-9_]*(\.\.\.)?\]|[A-Z][A-Z0-9_]*(\.\.\.)?)$")

ROOT = styled_command(app)


def _commands() -> list[tuple[list[str], object]]:
    found: list[tuple[list[str], object]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(ROOT, [])
    return found


COMMANDS = _commands()


def _help(path: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    ROOT.main(args=[*path, "--help"], prog_name="sbtc-ops", standalone_mode=False)
    return capsys.readouterr().out


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"verify", "restore", "key verify-backup", "audit firewall", "history"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_help_uses_the_conventional_notation(
    path: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    text = _help(path, capsys)
    assert "Usage:" in text
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{' '.join(path)} --help shows a {what}:\n{text}"
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    pieces = usage.split("[OPTIONS]", 1)[1].split()
    for piece in pieces:
        if piece in ("COMMAND", "[ARGS]..."):
            continue
        assert USAGE_ARGUMENT.match(piece), f"argument {piece!r} in {usage.strip()!r}"
    command = dict((tuple(p), c) for p, c in COMMANDS)[tuple(path)]
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption) and param.metavar and not param.hidden:
            long_name = next(o for o in param.opts if o.startswith("--"))
            # An alias is shown beside the name: `--repo,--to LOCATION`.
            aliases = r"(,--[\w-]+)*"
            shown = re.escape(long_name) + aliases + r"\s+(-\w\s+)?" + re.escape(param.metavar)
            assert re.search(shown, text), f"{long_name} {param.metavar} not in:\n{text}"


def test_one_placeholder_per_option_name_everywhere() -> None:
    placeholders: dict[str, set[str]] = defaultdict(set)
    for _, command in COMMANDS:
        for param in getattr(command, "params", []):
            if isinstance(param, TyperOption):
                long_name = next(o for o in param.opts if o.startswith("--"))
                placeholders[long_name].add(option_placeholder(param))
                if param.is_flag or param.count:
                    assert param.metavar == "", f"{long_name} is a flag: no placeholder"
                else:
                    assert PLACEHOLDER.match(param.metavar or ""), (long_name, param.metavar)
            elif isinstance(param, TyperArgument):
                assert USAGE_ARGUMENT.match(param.metavar or ""), (param.name, param.metavar)
    mixed = {name: shown for name, shown in placeholders.items() if len(shown) > 1}
    assert not mixed, f"options shown with different placeholders: {mixed}"
    assert placeholders["--stacks-url"] == {"URL"}
    assert placeholders["--identity"] == {"FILE"}


def test_the_installed_command_prints_the_styled_help(cli: Callable[..., CliResult]) -> None:
    result = cli("verify", "--help")
    assert result.code == 0
    assert "Usage: sbtc-ops verify [OPTIONS] [BACKUP]" in result.stdout
    assert re.search(r"--stacks-url\s+URL", result.stdout)
    assert "<bool>" not in result.stdout and "<list[str]>" not in result.stdout


def test_range_limits_are_still_enforced(cli: Callable[..., CliResult]) -> None:
    result = cli("history", "--limit", "0")
    assert result.code == 2 and "--limit" in result.stderr
