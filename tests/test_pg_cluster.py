"""Throwaway clusters: private, unprivileged, tuned, and gone afterwards whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest

from sbtc_ops.errors import DependencyError, UsageError
from sbtc_ops.pg import ThrowawayCluster, postgres_processes
from sbtc_ops.pg.cluster import reap_stale_directories
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
from tests.support.pg import assert_no_postgres_left, binaries_or_skip

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _binaries_available() -> None:
    binaries_or_skip()


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_cluster_is_private_unprivileged_socket_only_and_removed(cluster_parent: Path) -> None:
    with ThrowawayCluster(parent=cluster_parent) as cluster:
        base, pid = cluster.base_dir, cluster.pid
        assert pid is not None
        assert base.parent == cluster_parent.resolve()
        # The base stays ours (nothing of the server's user can be planted where we write);
        # the server's user may only pass through it to its own data and socket directories,
        # and with a mount view not even that: it reaches them through its own namespace.
        passes_through = not cluster.run_as.is_current and not cluster.sandbox.mount_view
        assert base.stat().st_mode & 0o777 == (0o711 if passes_through else 0o700)
        assert base.stat().st_uid == os.geteuid()
        assert cluster.data_dir.stat().st_mode & 0o777 == 0o700
        # (With a view we connect through the socket's directory: only via our 0700 base.)
        assert cluster.socket_dir.stat().st_mode & 0o777 == (
            0o711 if cluster.sandbox.mount_view else 0o700
        )
        for own in (cluster.socket_dir, cluster.data_dir):
            assert own.stat().st_uid == cluster.run_as.uid
        assert (base / "owner.pid").stat().st_uid == os.geteuid()
        if os.geteuid() == 0:
            assert process_uid(pid) == cluster.run_as.uid != 0
        assert not socket_inodes(pid) & listening_tcp_inodes(), "a TCP listener is open"
        assert len(str(cluster.socket_dir / f".s.PGSQL.{cluster.port}")) < 100
        assert set(cluster.timings) >= {"initdb", "start"}
        assert [p for p, _ in postgres_processes(base)] and pid in dict(postgres_processes(base))
        with cluster.connect() as conn:
            row = conn.execute(
                "SELECT current_setting('listen_addresses'), current_setting('fsync'),"
                " current_setting('wal_level'), current_setting('autovacuum'),"
                " current_setting('full_page_writes'), current_setting('synchronous_commit'),"
                " current_setting('maintenance_work_mem'), current_user"
            ).fetchone()
        assert row == ("", "off", "minimal", "off", "off", "off", "256MB", cluster.superuser)
        cluster.create_database("restored")
        with psycopg.connect(cluster.conninfo("restored")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("restored",)
    assert not base.exists()
    assert "stop" in cluster.timings
    assert_no_postgres_left(base, grace_s=0)


def test_untuned_cluster_keeps_postgres_defaults(cluster_parent: Path) -> None:
    with ThrowawayCluster(parent=cluster_parent, tuned=False) as cluster, cluster.connect() as conn:
        row = conn.execute("SELECT current_setting('fsync'), current_setting('wal_level')")
        assert row.fetchone() == ("on", "replica")


def test_exception_inside_stops_and_removes(cluster_parent: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), ThrowawayCluster(parent=cluster_parent) as c:
        base = c.base_dir
        raise RuntimeError("boom")
    assert not base.exists()
    assert_no_postgres_left(cluster_parent)


def test_keyboard_interrupt_stops_even_a_kept_cluster(cluster_parent: Path) -> None:
    with pytest.raises(KeyboardInterrupt), ThrowawayCluster(parent=cluster_parent, keep=True) as c:
        base = c.base_dir
        raise KeyboardInterrupt
    assert not base.exists()
    assert_no_postgres_left(cluster_parent)


def test_keep_leaves_it_running_and_says_how_to_connect(cluster_parent: Path) -> None:
    messages: list[str] = []
    cluster = ThrowawayCluster(parent=cluster_parent, keep=True, announce=messages.append)
    try:
        with cluster:
            pass
        assert cluster.running
        assert len(messages) == 1 and "psql" in messages[0] and str(cluster.base_dir) in messages[0]
        with cluster.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
    assert_no_postgres_left(cluster_parent)


def test_failed_start_reports_the_server_log_and_cleans_up(cluster_parent: Path) -> None:
    cluster = ThrowawayCluster(parent=cluster_parent, extra_settings={"shared_buffers": "lots"})
    with pytest.raises(DependencyError, match=r"PostgreSQL did not start.*shared_buffers"):
        cluster.start()
    assert list(cluster_parent.iterdir()) == []
    assert not cluster.running


def test_socket_path_limit_is_checked_before_anything_is_made(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    with pytest.raises(UsageError, match="too deep for a PostgreSQL unix socket"):
        ThrowawayCluster(parent=deep).start()
    assert list(deep.iterdir()) == []


def test_tcp_mode_requires_the_password(cluster_parent: Path) -> None:
    with ThrowawayCluster(parent=cluster_parent, tcp_port=0) as cluster:
        cluster.create_role("signer", "s3cret:/@pw")
        cluster.create_database("signer", owner="signer")
        url = cluster.tcp_url("signer", "signer", "s3cret:/@pw")
        assert url.startswith(f"postgresql://signer:s3cret%3A%2F%40pw@127.0.0.1:{cluster.port}/")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("signer",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.tcp_url("signer", "signer", "wrong"))
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres")


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sbtc_ops.pg import ThrowawayCluster
    with ThrowawayCluster(parent=Path(sys.argv[1])) as cluster:
        print(cluster.base_dir, cluster.pid, flush=True)
        time.sleep(120)
    """
)


def start_child_with_cluster(parent: Path) -> tuple[subprocess.Popen[str], Path, int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    if not line:
        child.kill()
        raise AssertionError(f"child did not start a cluster: {child.communicate()[1]}")
    base, pid = Path(line[0]), int(line[1])
    assert pid in dict(postgres_processes(base))
    return child, base, pid


def test_sigterm_of_the_owner_stops_and_removes(cluster_parent: Path) -> None:
    child, base, _ = start_child_with_cluster(cluster_parent)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert not base.exists()
    assert_no_postgres_left(cluster_parent)


def test_kill_9_of_the_owner_takes_the_server_with_it(cluster_parent: Path) -> None:
    child, base, _ = start_child_with_cluster(cluster_parent)
    child.kill()
    child.communicate(timeout=30)
    assert_no_postgres_left(cluster_parent)  # the kernel delivered the parent-death signal
    assert base.exists()  # nobody was left to remove it…
    server_user = resolve_run_as(None).uid
    assert reap_stale_directories(cluster_parent, (os.geteuid(), server_user)) == [base]
    assert not base.exists()  # …until the next run


def test_stale_directories_of_live_owners_are_kept(cluster_parent: Path) -> None:
    with ThrowawayCluster(parent=cluster_parent) as cluster:
        assert reap_stale_directories(cluster_parent) == []
        assert cluster.base_dir.exists()
    unrelated = cluster_parent / "sbtc-pg-unrelated"
    unrelated.mkdir()
    assert reap_stale_directories(cluster_parent) == []  # no owner.pid: not ours to remove
    assert unrelated.exists()
    (unrelated / "owner.pid").write_text("999999999\n")  # a pid that cannot exist
    if os.geteuid() == 0:
        os.chown(unrelated, 54321, 54321)
        assert reap_stale_directories(cluster_parent) == []  # someone else's: left alone
        os.chown(unrelated, 0, 0)
    assert reap_stale_directories(cluster_parent) == [unrelated]


def test_stop_escalates_to_sigkill(cluster_parent: Path) -> None:
    cluster = ThrowawayCluster(parent=cluster_parent, stop_timeout_s=0.5)
    with cluster:
        pid = cluster.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a stuck server ignores the fast-shutdown request
    assert not cluster.running
    assert_no_postgres_left(cluster_parent)


NON_ROOT_CHILD = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from sbtc_ops.pg import ThrowawayCluster
    with ThrowawayCluster(parent=Path(os.environ["PARENT"])) as cluster:
        assert cluster.run_as.is_current and cluster.run_as.uid == os.geteuid() != 0
        base = cluster.base_dir
        with cluster.connect() as conn:
            print(conn.execute("SELECT current_setting('fsync')").fetchone()[0])
    print(base.exists())
    """
)


def test_non_root_invocation_runs_the_server_as_itself(cluster_parent: Path) -> None:
    """sbtc-ops run by an ordinary user, with a PATH holding directories it cannot enter."""
    system_python = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if os.geteuid() != 0 or not system_python.exists():
        pytest.skip("needs root and a system Python of this version to become another user")
    import psycopg as psycopg_module

    site_packages = Path(psycopg_module.__file__).resolve().parents[1]
    source = Path(__file__).resolve().parents[1] / "src"
    unreadable = cluster_parent / "private-bin"
    unreadable.mkdir(mode=0o700)
    parent = cluster_parent / "nobody"
    parent.mkdir(mode=0o700)
    nobody = resolve_run_as("nobody")
    os.chown(parent, nobody.uid, nobody.gid)  # our own directory, given to the user we become
    done = subprocess.run(
        [str(system_python), "-c", NON_ROOT_CHILD],
        user="nobody",
        group=nobody.gid,
        extra_groups=[],
        cwd="/",
        env={
            "PYTHONPATH": f"{source}:{site_packages}",
            "PATH": f"{unreadable / 'bin'}:/usr/bin:/bin",
            "PARENT": str(parent),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 and "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"the dependencies are not importable as nobody: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["off", "False"]


def test_unusable_tmpdir_falls_back_to_tmp_but_a_given_parent_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0 and not Sandbox(resolve_run_as()).mount_view:
        unreachable = tmp_path  # under pytest's 0700 root directory: the server user can't enter
    else:  # (a sandbox with a mount view needs no way through the host's directories)
        unreachable = tmp_path / ("d" * 90)  # too deep for a socket path
        unreachable.mkdir()
    with pytest.raises((DependencyError, UsageError)):
        ThrowawayCluster(parent=unreachable).start()
    monkeypatch.setattr(tempfile, "tempdir", str(unreachable))
    with ThrowawayCluster() as cluster:
        base = cluster.base_dir
        assert base.parent == Path("/tmp")
    assert not base.exists()
    assert_no_postgres_left(base, grace_s=0)
