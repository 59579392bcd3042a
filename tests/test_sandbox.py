"""The restore drill's containment, one behaviour at a time (the hostile-archive corpus in
test_hostile_backups.py exercises them together, end to end)."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops.backup.archive import EXPANSION_FLOOR, FREE_SPACE_MARGIN, expansion_limit
from sbtc_ops.backup.manifest import Manifest, member_parts
from sbtc_ops.backup.pgrestore import feed_plain_sql
from sbtc_ops.backup.staging import Staging, reap_stale_staging
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg import ThrowawayCluster
from sbtc_ops.pg.cluster import postgres_processes, reap_stale_directories
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox, namespaces_available

MARKER = "987654"


@pytest.fixture
def parent() -> Iterator[Path]:
    """A short, world-traversable directory for clusters and staging (like /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="sbx-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"pytest" not in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a//b",
        "",
        ".",
        "..",
        "a/../b",
        "a\x00b",
        ".hidden",
        "a/b/c/d",
        "x\\y",
    ],
)
def test_manifest_member_names_that_could_escape_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe file name"):
        member_parts(name)


@pytest.mark.parametrize("name", ["signer.dump", "signer.dump.age", "signer.dir/toc.dat"])
def test_manifest_member_names_of_real_backups_are_accepted(name: str) -> None:
    assert "/".join(member_parts(name)) == name


def test_a_manifest_naming_an_unsafe_path_is_not_a_manifest() -> None:
    doc = {"id": "x", "files": [{"path": "../../etc/x", "size": 1, "sha256": "0" * 64}]}
    with pytest.raises(SbtcOpsError, match="not a valid sbtc-ops manifest"):
        Manifest.from_bytes(__import__("json").dumps(doc).encode(), "m.json")


def test_expansion_limit_is_a_multiple_with_a_floor_and_never_beyond_free_space() -> None:
    assert expansion_limit(1000, None, 1 << 40) == EXPANSION_FLOOR
    assert expansion_limit(10 << 20, None, 1 << 40) == 100 * (10 << 20)
    assert expansion_limit(10 << 20, 5 << 20, 1 << 40) == 5 << 20
    assert expansion_limit(10 << 20, None, FREE_SPACE_MARGIN + 7) == 7


def test_plain_sql_is_fed_behind_a_restrict_key_without_the_dumps_own(tmp_path: Path) -> None:
    dump = tmp_path / "d.sql"
    dump.write_bytes(
        b"\\restrict dumpkey\nSET x = 1;\nCOPY t (a) FROM stdin;\n\\restrict in-data\n\\.\n"
        b"\\unrestrict dumpkey\n\\! id\n"
    )
    sink = io.BytesIO()
    feed_plain_sql(dump, sink, "ourkey")
    fed = sink.getvalue().splitlines()
    assert fed[0] == b"\\restrict ourkey"
    assert b"\\restrict dumpkey" not in fed and b"\\unrestrict dumpkey" not in fed
    assert b"\\restrict in-data" in fed  # COPY data is data
    assert b"\\! id" in fed  # refused by psql, which is in restricted mode


def test_sandboxed_children_see_none_of_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("SIGNER_SIGNER__PRIVATE_KEY", secret)
    monkeypatch.setenv("PGPASSWORD", secret)
    done = Sandbox(resolve_run_as(None)).run(["env"], timeout_s=30)
    assert done.returncode == 0
    assert secret not in done.stdout and "SIGNER_" not in done.stdout
    assert "PATH=" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces need root")
def test_a_detached_child_does_not_outlive_its_sandbox() -> None:
    assert namespaces_available(), "unshare --pid must work as root on this host"
    sandbox = Sandbox(resolve_run_as(None))
    done = sandbox.run(
        ["/bin/sh", "-c", f"setsid sleep {MARKER} > /dev/null 2>&1 & echo started"],
        timeout_s=30,
    )
    assert "started" in done.stdout
    deadline = time.monotonic() + 5
    while _processes_with(f"sleep {MARKER}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(f"sleep {MARKER}")
    assert done.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only under root")
def test_the_server_runs_unprivileged_and_without_our_secrets(
    parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY", secret)
    with ThrowawayCluster(parent=parent) as cluster, cluster.connect():
        # The postmaster and every backend (pids as this host sees them).
        pids = [pid for pid, _ in postgres_processes(cluster.base_dir)]
        assert cluster.pid in pids and len(pids) > 2
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert secret.encode() not in environ
            assert Path(f"/proc/{pid}").stat().st_uid == cluster.run_as.uid != 0
        # Nothing sbtc-ops writes sits in a directory the server's user could plant in.
        for ours in (cluster.base_dir / "owner.pid", cluster.log_path, cluster.hba_path):
            assert ours.stat().st_uid == os.geteuid()
        assert cluster.base_dir.stat().st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="planting as another user needs root")
def test_a_fifo_or_symlink_planted_in_a_stale_directory_neither_hangs_nor_misleads(
    parent: Path,
) -> None:
    run_as = resolve_run_as(None)
    stale = parent / "sbtc-pg-planted"
    stale.mkdir()
    os.mkfifo(stale / "owner.pid")
    os.chown(stale, run_as.uid, run_as.gid)
    target = parent / "precious"
    target.mkdir()
    (target / "keep").write_text("x")
    (parent / "sbtc-pg-link").symlink_to(target)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(reap_stale_directories(parent)))
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "reaping blocked on a FIFO"
    assert result == [[]]
    with ThrowawayCluster(parent=parent, run_as=run_as) as cluster:
        assert cluster.running
    assert (target / "keep").read_text() == "x"


def test_staging_of_a_killed_run_is_removed_by_the_next(parent: Path) -> None:
    child = subprocess.Popen(
        [
            "python3",
            "-c",
            "import os,sys,tempfile; d=tempfile.mkdtemp(prefix='sbtc-ops-verify-',dir=sys.argv[1]);"
            "open(os.path.join(d,'owner.pid'),'w').write(str(os.getpid()));"
            "open(os.path.join(d,'decrypted-0'),'w').write('clear');print(d,flush=True)",
            str(parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    left = Path(child.communicate(timeout=30)[0].strip())
    assert (left / "decrypted-0").exists()
    with Staging(resolve_run_as(None), parent=parent) as staging:
        assert not left.exists()
        assert staging.root.exists()
        assert reap_stale_staging(parent) == []  # ours is alive
    assert not any(parent.iterdir())
