"""Helpers shared by several audit areas: one behaviour for every area using them."""

from __future__ import annotations

from pathlib import Path

from sbtc_ops.audit.areas.secrets import files_holding, holds_secret
from sbtc_ops.audit.framework import HostContext, RecordedRunner
from sbtc_ops.config import Settings


def test_files_holding_sorts_secret_files_by_mode_and_names_unreadable_ones(
    tmp_path: Path,
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "open.env").write_text("DB_PASSWORD=hunter2-long-password\n")
    (etc / "open.env").chmod(0o644)
    (etc / "private.env").write_text("API_KEY=abcdefabcdef\n")
    (etc / "private.env").chmod(0o600)
    (etc / "plain.conf").write_text("LOG_LEVEL=info\n")
    (etc / "plain.conf").chmod(0o644)
    (etc / "a-directory").mkdir()
    ctx = HostContext(Settings(), root=tmp_path, runner=RecordedRunner({}))
    paths = [f"/etc/{name}" for name in ("open.env", "private.env", "plain.conf", "missing")]
    found, unreadable = files_holding(ctx, [*paths, "/etc/a-directory"], holds_secret)
    assert [(f.path, f.mode, f.exposed) for f in found] == [
        ("/etc/open.env", 0o644, True),
        ("/etc/private.env", 0o600, False),
    ]
    assert found[0].holds == "DB_PASSWORD (line 1)"
    assert [(path, "not a regular file" in str(exc)) for path, exc in unreadable] == [
        ("/etc/a-directory", True)
    ]
