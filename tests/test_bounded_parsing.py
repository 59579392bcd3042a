"""Issue 21, items 2 and 4: what the root process parses is linear in its input and bounded
in memory — the plain-SQL role scan and compose YAML. Each attack from the issue is
reproduced; bounds are the tests' timeouts (pytest-timeout) and peak RSS sampled from
/proc/self/status (its high-water mark reset first), never timed assertions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sbtc_ops.backup.plainsql import MAX_STATEMENT_LINE, plain_dump_roles, tokenize

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
