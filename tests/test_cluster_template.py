"""Throwaway clusters copy a kept pristine data directory instead of running initdb
(pg/template.py): the first cluster keeps one, the next copy it, a broken one falls back to
initdb, and the running server never sees the template."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sbtc_ops.errors import DependencyError
from sbtc_ops.pg import ThrowawayCluster
from sbtc_ops.pg.cluster import ClusterSetup, SetupStep
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
from tests.support.pg import binaries_or_skip

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _mount_view() -> None:
    binaries_or_skip()
    if not Sandbox(resolve_run_as()).mount_view:
        pytest.skip("templates are used only by a sandbox with its own mount view")


def templates_in(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def answer(cluster: ThrowawayCluster) -> tuple[str, int]:
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT current_setting('server_encoding'),"
            " (SELECT count(*) FROM pg_database WHERE datname = 'postgres')"
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def test_the_second_cluster_copies_the_firsts_pristine_data_directory(
    tmp_path: Path, cluster_parent: Path
) -> None:
    templates = tmp_path / "templates"
    with ThrowawayCluster(parent=cluster_parent, templates=templates) as first:
        assert first.from_template is False
        assert answer(first) == ("UTF8", 1)
        with first.connect() as conn:  # changes after initdb never reach the template
            conn.execute("CREATE DATABASE made_after_initdb")
    (kept,) = templates_in(templates)
    assert (kept / "PG_VERSION").is_file()
    assert not (kept / "postmaster.pid").exists()
    with ThrowawayCluster(parent=cluster_parent, templates=templates) as second:
        assert second.from_template is True
        assert answer(second) == ("UTF8", 1)
        with second.connect() as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert "made_after_initdb" not in names
        # The running server's view has no template (only the copy step had it, read-only).
        assert second.pid is not None
        assert not os.path.lexists(f"/proc/{second.pid}/root{kept}")
        assert not os.path.lexists(f"/proc/{second.pid}/root{templates}")
    assert templates_in(templates) == [kept]


def test_a_template_that_cannot_be_copied_falls_back_to_initdb(
    tmp_path: Path, cluster_parent: Path
) -> None:
    templates = tmp_path / "templates"
    with ThrowawayCluster(parent=cluster_parent, templates=templates):
        pass
    (kept,) = templates_in(templates)
    unreadable = kept / "PG_VERSION"
    unreadable.chmod(0)  # its owner (the server's user) can no longer read it
    with ThrowawayCluster(parent=cluster_parent, templates=templates) as cluster:
        assert cluster.from_template is False
        assert answer(cluster) == ("UTF8", 1)
    (again,) = templates_in(templates)
    assert stat.S_IMODE((again / "PG_VERSION").stat().st_mode) != 0


def test_unused_templates_and_stale_halves_are_pruned(tmp_path: Path, cluster_parent: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir(mode=0o700)
    unused = templates / ("0" * 32)  # an older PostgreSQL's, unused for a year
    unused.mkdir()
    (unused / "PG_VERSION").write_text("15\n")
    (templates / (unused.name + ".used")).touch()
    os.utime(templates / (unused.name + ".used"), (0, 0))
    in_use = templates / ("1" * 32)  # another sandbox user's (root's CLI beside the service)
    in_use.mkdir()
    (templates / (in_use.name + ".used")).touch()
    orphan_marker = templates / (("2" * 32) + ".used")
    orphan_marker.touch()
    stale = templates / ".new-crashed"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = templates / ".new-being-written"
    fresh.mkdir()
    with ThrowawayCluster(parent=cluster_parent, templates=templates):
        pass
    left = {p.name for p in templates.iterdir()}
    assert unused.name not in left and unused.name + ".used" not in left
    assert stale.name not in left and orphan_marker.name not in left
    assert {in_use.name, in_use.name + ".used", fresh.name} <= left
    (ours,) = [p for p in templates_in(templates) if p.name not in (in_use.name,)]
    assert (templates / (ours.name + ".used")).is_file()


# -- a kind's setup (pg/cluster.ClusterSetup): run once, then part of the template ------------

SETUP = ClusterSetup(
    (
        SetupStep("postgres", 'CREATE ROLE "set_up_role" NOLOGIN'),
        SetupStep("postgres", 'CREATE DATABASE "set_up_db" TEMPLATE template0'),
        SetupStep("set_up_db", "CREATE EXTENSION no_such_extension", optional=True),
        SetupStep("set_up_db", "CREATE TABLE marker (made_by text)"),
        SetupStep("set_up_db", "INSERT INTO marker VALUES ('setup')"),
    )
)


def set_up_state(cluster: ThrowawayCluster) -> tuple[bool, list[str]]:
    with cluster.connect() as conn:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'set_up_role'").fetchone()
    with cluster.connect("set_up_db") as conn:
        rows = [str(r[0]) for r in conn.execute("SELECT made_by FROM marker")]
    return role is not None, rows


def test_a_setup_runs_once_then_comes_with_the_template(
    tmp_path: Path, cluster_parent: Path
) -> None:
    templates = tmp_path / "templates"
    with ThrowawayCluster(parent=cluster_parent, templates=templates, setup=SETUP) as first:
        assert first.from_template is False and "setup" in first.timings
        assert set_up_state(first) == (True, ["setup"])  # the optional failure was skipped
        with first.connect("set_up_db") as conn:  # after the setup: never in the template
            conn.execute("INSERT INTO marker VALUES ('after')")
    (kept,) = templates_in(templates)
    assert not (kept / "postmaster.pid").exists()  # kept from a clean shutdown
    with ThrowawayCluster(parent=cluster_parent, templates=templates, setup=SETUP) as second:
        assert second.from_template is True and "setup" not in second.timings
        assert set_up_state(second) == (True, ["setup"])
    # Another setup (or none) is another kind: it never gets this template.
    other = ClusterSetup((*SETUP.steps, SetupStep("set_up_db", "SELECT 1")))
    with ThrowawayCluster(parent=cluster_parent, templates=templates, setup=other) as third:
        assert third.from_template is False
    with ThrowawayCluster(parent=cluster_parent, templates=templates) as plain:
        assert plain.from_template is False
        with plain.connect() as conn:
            assert (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'set_up_role'").fetchone()
                is None
            )
    assert len(templates_in(templates)) == 3


def test_a_failing_setup_step_fails_the_cluster_and_keeps_no_template(
    tmp_path: Path, cluster_parent: Path
) -> None:
    templates = tmp_path / "templates"
    broken = ClusterSetup((SetupStep("postgres", "CREATE TABLE x (y no_such_type)"),))
    cluster = ThrowawayCluster(parent=cluster_parent, templates=templates, setup=broken)
    with pytest.raises(DependencyError, match="setting up the throwaway cluster failed"):
        cluster.start()
    assert not cluster.running
    assert list(cluster_parent.iterdir()) == []
    assert not templates.exists() or templates_in(templates) == []
