"""The one terminal style (src/sbtc_ops/render.py): alignment, wrapping, fix lines, shared
caveats said once, full width when piped, IEC sizes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from sbtc_ops.history import CliRun, record_cli_run
from sbtc_ops.render import (
    UNWRAPPED,
    CheckLine,
    console_width,
    format_size,
    render_checks,
    status_summary,
)
from sbtc_ops.results import Status
from tests.support.cli import CliResult

SSHD = "`sshd -T` failed: Missing privilege separation directory: /run/sshd"


def _render(lines: list[CheckLine], width: int, heading: str | None = None) -> list[str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False)
    render_checks(console, [(heading, lines)])
    return buffer.getvalue().splitlines()


def test_ids_align_and_long_text_wraps_under_itself() -> None:
    long = "word " * 30
    out = _render(
        [
            CheckLine(Status.PASS, "A-1", "short"),
            CheckLine(Status.FAIL, "LONGER-ID", long.strip(), fix="do this " * 12),
        ],
        width=60,
    )
    assert all(len(line) <= 60 for line in out), out
    text_column = out[0].index("short")
    assert out[1].index("word") == text_column
    continuation = [line for line in out[2:] if not line.strip().startswith("fix:")]
    assert continuation and all(line[:text_column].strip() == "" for line in continuation)
    fix = next(line for line in out if "fix:" in line)
    assert fix.index("fix:") == text_column
    assert out[0].startswith("  ✓ pass ") and out[1].startswith("  ✗ fail ")


def test_no_fix_line_for_passing_or_skipped_checks() -> None:
    out = _render(
        [
            CheckLine(Status.PASS, "A", "fine", fix="never shown"),
            CheckLine(Status.SKIP, "B", "not run", fix="never shown either"),
            CheckLine(Status.WARN, "C", "meh", fix="shown"),
        ],
        width=100,
    )
    assert sum("fix:" in line for line in out) == 1 and "fix: shown" in out[-1]


def test_a_repeated_caveat_is_said_once() -> None:
    lines = [
        CheckLine(Status.FAIL, "SSH-001", f"password on [/etc/ssh/sshd_config; {SSHD}]"),
        CheckLine(Status.PASS, "SSH-002", f"kbd off (/etc/ssh/sshd_config; {SSHD})"),
        CheckLine(Status.PASS, "SSH-005", "no software key"),
    ]
    out = "\n".join(_render(lines, width=UNWRAPPED))
    assert out.count("sshd -T") == 1
    assert "[/etc/ssh/sshd_config] *" in out and "(/etc/ssh/sshd_config) *" in out
    assert f"* {SSHD} (applies to SSH-001, SSH-002)" in out
    single = "\n".join(_render(lines[:1], width=UNWRAPPED))
    assert SSHD in single and "applies to" not in single  # said once already: not lifted


def test_piped_output_is_not_wrapped() -> None:
    assert console_width(io.StringIO()) == UNWRAPPED
    text = "x" * 400
    out = _render([CheckLine(Status.WARN, "W", text)], width=UNWRAPPED)
    assert len(out) == 1 and out[0].endswith(text)


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (89_100, "87.0 KiB"), (5 * 1024**2, "5.0 MiB"),
     (3 * 1024**3 + 1, "3.0 GiB"), (None, "-")],
)  # fmt: skip
def test_sizes_are_iec(size: int | None, shown: str) -> None:
    assert format_size(size) == shown


def test_status_summary() -> None:
    statuses = [Status.PASS, Status.PASS, Status.FAIL, Status.SKIP]
    assert status_summary(statuses) == "4 checks: 2 pass, 1 fail, 1 skip"


def test_piped_history_is_full_width(cli: Callable[..., CliResult], workdir: Path) -> None:
    summary = "backup-20260101: " + "every word of a long summary " * 8
    record_cli_run(workdir / "state", CliRun("verify", 1000.0, 1002.0, "problem", summary))
    result = cli("history", env={"COLUMNS": "80"})
    assert result.code == 0, result.stderr
    assert any(summary.strip() in line for line in result.stdout.splitlines()), result.stdout
