"""Issue 21, items 2 and 4: what the root process parses is linear in its input and bounded
in memory — the plain-SQL role scan and compose YAML. Each attack from the issue is
reproduced; bounds are the tests' timeouts (pytest-timeout) and peak RSS sampled from
/proc/self/status (its high-water mark reset first), never timed assertions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sbtc_ops.audit.framework import EvidenceError, HostContext
from sbtc_ops.backup.plainsql import MAX_STATEMENT_LINE, plain_dump_roles, tokenize
from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.host.compose import compose_files, interpolate_tree, load_project
from sbtc_ops.yamlsafe import YamlError, load_bounded
from tests.support.cli import clean_env, run_cli

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")


def peak_rss_growth(work: Callable[[], T]) -> tuple[T, int]:
    """`work()`'s result and how far it raised this process's peak RSS (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    result = work()
    return result, (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


# -- the plain-SQL role scan ------------------------------------------------------------------------


def test_role_scan_is_linear_on_a_backtracking_line(tmp_path: Path) -> None:
    # 360 kB on one line: the former regex backtracked over every " TO " (issue 21: 58 s).
    dump = tmp_path / "dump.sql"
    dump.write_bytes(b"GRANT" + b" TO x GRANTED BY y" * 20000 + b"\nALTER TABLE t OWNER TO bob;\n")
    assert plain_dump_roles(dump) == {"bob"}


def test_role_scan_of_many_quoted_names_is_linear(tmp_path: Path) -> None:
    dump = tmp_path / "dump.sql"
    line = b'ALTER TABLE t OWNER TO "a' + b'""' * 30000 + b'";\n'
    dump.write_bytes(line * 200 + b'GRANT ALL ON TABLE t TO "x' + b'"' * 50000 + b"\n")
    assert plain_dump_roles(dump) == {"a" + '"' * 30000}


def test_role_scan_memory_is_bounded_by_the_line_cap(tmp_path: Path) -> None:
    # 64 MB with no newline, then a role statement: read in capped pieces, never whole.
    dump = tmp_path / "dump.sql"
    with dump.open("wb") as out:
        out.write(b"GRANT ALL ON TABLE t TO ")
        for _ in range(64):
            out.write(b"y" * (1 << 20))
        out.write(b";\nALTER SCHEMA s OWNER TO carol;\nCOPY t (a) FROM stdin;\n")
        out.write(b"z" * (8 << 20) + b"\n\\.\nGRANT USAGE ON SCHEMA s TO dave;\n")
    roles, growth = peak_rss_growth(lambda: plain_dump_roles(dump))
    assert roles == {"carol", "dave"}
    assert growth < 16 << 20, f"the scan raised peak RSS by {growth >> 20} MiB"


def test_role_statement_longer_than_the_cap_is_not_one(tmp_path: Path) -> None:
    dump = tmp_path / "dump.sql"
    dump.write_bytes(b"ALTER TABLE " + b"t" * MAX_STATEMENT_LINE + b" OWNER TO eve;\n")
    assert plain_dump_roles(dump) == set()


def test_tokenizer_keeps_quotes_and_refuses_unterminated_ones() -> None:
    assert tokenize("GRANT ALL ON TABLE \"a \"\" b\" TO 'x''y';") == [
        "GRANT", "ALL", "ON", "TABLE", '"a "" b"', "TO", "'x''y'", ";",
    ]  # fmt: skip
    assert tokenize('GRANT ALL ON "never closed TO x;') is None


@pytest.mark.parametrize(
    ("line", "roles"),
    [
        (b"GRANT SELECT ON TABLE t TO alice WITH GRANT OPTION GRANTED BY bob;\n", {"alice"}),
        (b"REVOKE ALL ON SCHEMA public FROM PUBLIC;\n", set()),
        (b"GRANT ALL ON FUNCTION f(x integer) TO current_user;\n", set()),
        (b'ALTER TABLE "x OWNER TO y" OWNER TO "Zed";\n', {"Zed"}),
        (b"ALTER TABLE t OWNER TO alice; DROP TABLE u;\n", set()),
        (b"SET SESSION AUTHORIZATION 'Mixed''Case';\n", {"Mixed'Case"}),
        (b"GRANT ALL ON TABLE t TO alice\n", set()),
    ],
)
def test_role_statements_as_pg_dump_writes_them(
    tmp_path: Path, line: bytes, roles: set[str]
) -> None:
    dump = tmp_path / "dump.sql"
    dump.write_bytes(line)
    assert plain_dump_roles(dump) == roles


# -- compose YAML ---------------------------------------------------------------------------------

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def alias_bomb() -> str:
    """Under 600 bytes; 9^9 (387 million) strings once its aliases are expanded (issue 21:
    4.1 GB of RSS in 76 s, the old `discover.compose._interpolate` copying every path)."""
    lines = ['x-0: &l0 ["${X}","${X}","${X}","${X}","${X}","${X}","${X}","${X}","${X}"]']
    for level in range(1, 9):
        ref = f"*l{level - 1}"
        lines.append(f"x-{level}: &l{level} [{','.join([ref] * 9)}]")
    lines += ["services:", "  sbtc-signer:", "    image: signer", "    command: *l8", ""]
    return "\n".join(lines)


@pytest.fixture
def bomb_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bomb"
    directory.mkdir()
    (directory / "compose.yaml").write_text(alias_bomb())
    (directory / ".env").write_text("X=" + "x" * 64 + "\n")
    return directory


def test_alias_bomb_is_small(bomb_dir: Path) -> None:
    assert (bomb_dir / "compose.yaml").stat().st_size < 600


def test_compose_alias_bomb_is_refused_by_discovery_in_a_few_mb(bomb_dir: Path) -> None:
    def load() -> str:
        with pytest.raises(ConfigError) as caught:
            load_project(bomb_dir, [bomb_dir / "compose.yaml"])
        return str(caught.value)

    message, growth = peak_rss_growth(load)
    assert "expands (through its aliases) to more than" in message
    assert str(bomb_dir / "compose.yaml") in message
    assert growth < 8 << 20, f"parsing raised peak RSS by {growth >> 20} MiB"


def test_compose_alias_bomb_is_refused_by_the_audit_in_a_few_mb(bomb_dir: Path) -> None:
    ctx = HostContext(
        Settings.model_validate({"audit": {"compose_files": ["/compose.yaml"]}}), root=bomb_dir
    )

    def load() -> str:
        with pytest.raises(EvidenceError) as caught:
            compose_files(ctx)
        return str(caught.value)

    message, growth = peak_rss_growth(load)
    assert "expands (through its aliases)" in message
    assert growth < 8 << 20, f"parsing raised peak RSS by {growth >> 20} MiB"


def test_init_reports_the_alias_bomb(bomb_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "init", "--compose-dir", str(bomb_dir), cwd=tmp_path,
        env=clean_env(tmp_path / ".state", NO_ENGINE),
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 1, result.stdout + result.stderr
    assert "expands (through its aliases)" in result.stdout


def test_commands_with_the_bomb_as_compose_dir_exit_2(bomb_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "sbtc-ops.toml"
    config.write_text(f'[docker]\ncompose_dir = "{bomb_dir}"\n')
    result = run_cli(
        "--config", str(config), "config", "show", "--json", cwd=tmp_path,
        env=clean_env(tmp_path / ".state", NO_ENGINE),
    )  # fmt: skip
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "expands (through its aliases)" in result.json()["error"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "recursive alias"),
        ("a: " + "[" * 10_000 + "\n", "nested more than"),
        ("a: " + "- " * 50_000 + "x\n", "not valid YAML"),
        ("a: 'x'\n" * 40_000, "larger than"),
        ("a: &s '" + "y" * 200_000 + "'\nb: [" + ",".join(["*s"] * 50) + "]\n", "MiB of values"),
        ("a: [\n", "not valid YAML (line 2)"),
    ],
)
def test_bounded_loader_refuses(text: str, message: str) -> None:
    with pytest.raises(YamlError, match=re.escape(message)):
        load_bounded(text)


def test_bounded_loader_keeps_anchors_and_merge_keys() -> None:
    doc = load_bounded("base: &b {image: x, env: [A]}\nsvc: {<<: *b, ports: [1]}\n")
    assert doc["svc"] == {"image": "x", "env": ["A"], "ports": [1]}


def test_interpolation_is_linear_in_the_document_not_its_expansion() -> None:
    doc = load_bounded("a: &a ['${X}', '${X}']\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n")
    out = interpolate_tree(doc, {"X": "v"})
    assert out["c"] == [[["v", "v"]] * 3] * 3
    assert out["c"][0] is out["c"][1]  # an alias stays shared: done once
