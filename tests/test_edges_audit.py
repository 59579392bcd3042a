"""`audit --root DIR` never leaves DIR and reads files with bounds; `audit --html FILE` is
written fresh, 0600, never through a symlink (issue 13)."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sbtc_ops.audit.areas.logs import MAX_HEAD_BYTES, first_line_time, observed_rate
from sbtc_ops.audit.framework import MAX_READ_BYTES, HostContext, HostFileError
from sbtc_ops.config import Settings
from sbtc_ops.host.rootpath import glob_in_root, resolve_in_root
from tests.support.cli import CliResult

Cli = Callable[..., CliResult]

MARKER = "HOST-ONLY-MARKER-7d1f"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file of the auditing machine, outside the audited tree, that must never be read."""
    directory = tmp_path / "outside"
    directory.mkdir()
    secret = directory / "secret.conf"
    secret.write_text(f"PasswordAuthentication yes # {MARKER}\n")
    return secret


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Path:
    """An audited tree whose symlinks try every way out."""
    root = tmp_path / "root"
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").symlink_to(outside)  # absolute, to this machine's file
    (root / "etc/ssh/sshd_config.d/up.conf").symlink_to(Path("../" * 12) / outside.relative_to("/"))
    (root / "etc/ssh/sshd_config.d/hop.conf").symlink_to("/etc/ssh/sshd_config")  # two hops
    (root / "etc/outside-dir").symlink_to(outside.parent)  # a directory out of the tree
    (root / "etc/loop-a").symlink_to("/etc/loop-b")
    (root / "etc/loop-b").symlink_to("loop-a")
    (root / "var/log/zero.log").symlink_to("/dev/zero")
    os.mkfifo(root / "var/log/fifo.log")
    return root


def _ctx(root: Path, **audit: object) -> HostContext:
    return HostContext(Settings.model_validate({"audit": audit}), root=root)


def test_absolute_and_relative_links_resolve_inside_the_root(tree: Path, outside: Path) -> None:
    inside = tree / outside.relative_to("/")
    assert resolve_in_root(tree, "/etc/ssh/sshd_config") == inside
    assert resolve_in_root(tree, "/etc/ssh/sshd_config.d/up.conf") == inside
    assert resolve_in_root(tree, "/etc/ssh/sshd_config.d/hop.conf") == inside
    assert resolve_in_root(tree, "/../../../etc/../etc/ssh/../../..") == tree
    assert resolve_in_root(tree, "/var/log/zero.log") == tree / "dev/zero"
    with pytest.raises(OSError) as loop:
        resolve_in_root(tree, "/etc/loop-a")
    assert loop.value.errno == errno.ELOOP


def test_reads_never_reach_the_auditing_machine(tree: Path, outside: Path) -> None:
    ctx = _ctx(tree)
    for path in (
        "/etc/ssh/sshd_config",
        "/etc/ssh/sshd_config.d/up.conf",
        "/etc/outside-dir/secret.conf",
    ):
        assert ctx.read_optional(path) is None, path
        assert not ctx.exists(path)
    # …unless the tree really holds the file at the place the link names on its host
    mirrored = tree / outside.relative_to("/")
    mirrored.parent.mkdir(parents=True)
    mirrored.write_text("from the audited host\n")
    assert ctx.read_text("/etc/ssh/sshd_config") == "from the audited host\n"
    assert ctx.show(ctx.host_path("/etc/ssh/sshd_config")) == str(outside)


def test_glob_follows_links_inside_the_root_only(tree: Path) -> None:
    assert glob_in_root(tree, "/etc/outside-dir/*") == []
    assert [p.name for p in _ctx(tree).glob("/etc/ssh/sshd_config.d/*.conf")] == [
        "hop.conf",
        "up.conf",
    ]
    (tree / "etc/ssh/real.d").mkdir()
    (tree / "etc/ssh/real.d/a.conf").write_text("x")
    (tree / "etc/linked.d").symlink_to("/etc/ssh/real.d")
    assert [str(p) for p in _ctx(tree).glob("/etc/linked.d/*.conf")] == ["/etc/linked.d/a.conf"]
    assert [str(p) for p in _ctx(tree).glob("/etc/**/a.conf")] == ["/etc/ssh/real.d/a.conf"]


def test_devices_fifos_and_loops_are_refused_without_blocking(tree: Path) -> None:
    ctx = _ctx(tree)
    with pytest.raises(HostFileError, match=r"fifo\.log is not a regular file"):
        ctx.read_optional("/var/log/fifo.log")
    with pytest.raises(HostFileError, match=r"fifo\.log is not a regular file"):
        ctx.read_head("/var/log/fifo.log", 100)
    (tree / "dev").mkdir()
    os.mknod(tree / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # a real /dev/zero
    with pytest.raises(HostFileError, match=r"zero\.log is not a regular file"):
        ctx.read_optional("/var/log/zero.log")
    with pytest.raises(HostFileError, match="cannot resolve /etc/loop-a"):
        ctx.read_optional("/etc/loop-a")
    assert first_line_time(ctx, "/var/log/zero.log") is None
    assert first_line_time(ctx, "/var/log/fifo.log") is None


def test_a_100_mib_single_line_log_is_read_only_at_its_start(tree: Path) -> None:
    log = tree / "var/log/huge.log"
    with log.open("wb") as handle:  # sparse: 100 MiB of one line, no disk used
        handle.write(b"2026-11-01T00:00:00Z start " + b"x" * 100)
        handle.truncate(100 * 1024 * 1024)
    ctx = _ctx(tree)
    with pytest.raises(HostFileError, match=f"larger than {MAX_READ_BYTES} bytes"):
        ctx.read_optional("/var/log/huge.log")
    assert len(ctx.read_head("/var/log/huge.log", MAX_HEAD_BYTES)) == MAX_HEAD_BYTES
    # one line longer than what is read: no time is claimed from a cut line
    assert first_line_time(ctx, "/var/log/huge.log") is None
    assert observed_rate(ctx, "/var/log/huge.log") is None
    small = tree / "var/log/small.log"
    small.write_text("banner\n2026-11-01T00:00:00Z started\n")
    assert first_line_time(ctx, "/var/log/small.log") == datetime(2026, 11, 1, tzinfo=UTC)


def test_audit_of_a_hostile_tree_stays_inside_and_answers(
    cli: Cli, tree: Path, workdir: Path
) -> None:
    big = tree / "var/log/huge.log"
    with big.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)
    (workdir / "sbtc-ops.toml").write_text(
        '[audit]\nlog_files = ["/var/log/*.log"]\nlogrotate_paths = ["/etc/outside-dir"]\n'
        'compose_files = ["/etc/ssh/sshd_config"]\n'
    )
    result = cli("audit", "--root", str(tree), "--json", timeout=300)
    assert result.code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    document = result.json()
    assert document["findings"]
    assert MARKER not in result.stdout + result.stderr
    assert "PasswordAuthentication" not in json.dumps(document)


# -- audit --html ----------------------------------------------------------------------------


def _audit_html(cli: Cli, tmp_path: Path, target: Path) -> CliResult:
    root = tmp_path / "empty-root"
    root.mkdir(exist_ok=True)
    return cli("audit", "--root", str(root), "--only", "firewall", "--html", str(target))


def test_html_report_is_new_and_0600(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = _audit_html(cli, tmp_path, target)
    assert result.code in (0, 1), result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "<html" in target.read_text().lower()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def test_html_report_replaces_an_existing_0644_file(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report")
    target.chmod(0o644)
    old_inode = target.stat().st_ino
    result = _audit_html(cli, tmp_path, target)
    assert result.code in (0, 1), result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != old_inode
    assert "old report" not in target.read_text()


def test_html_report_replaces_a_symlink_and_leaves_its_target(cli: Cli, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o644)
    target = tmp_path / "report.html"
    target.symlink_to(victim)
    result = _audit_html(cli, tmp_path, target)
    assert result.code in (0, 1), result.stderr
    assert not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert victim.read_text() == "precious"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_html_report_into_a_directory_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    result = _audit_html(cli, tmp_path, target)
    assert result.code == 2
    assert f"--html {target}: cannot write: Is a directory" in result.stderr
    assert "Traceback" not in result.stderr
