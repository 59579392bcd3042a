"""Run by tests/test_tmp_hygiene.py in an inner pytest (not collected by the suite itself)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def test_writes_into_tmp_path(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 4096)
    (tmp_path / "sub").mkdir()


def test_leaks_when_asked() -> None:
    if os.environ.get("PROBE_LEAK"):
        tempfile.mkdtemp(prefix="sbtc-leak-")  # deliberately never removed
