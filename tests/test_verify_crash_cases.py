"""Every archive gets a verdict (issue 20, item 4): nothing an archive or its manifest can hold
makes the drill crash (a traceback, an empty --json, exit 1 with no verdict).

Database- and role-level settings, a connection limit or ALLOW_CONNECTIONS false attached by
the restore are read, reported as what a signer backup never carries (`tampered`) and reset
before the reader connects, so none of them changes the verdict's kind. Roles a plain dump
names are always quoted, reserved names never created. A manifest that lists a member twice
is `corrupt`; a `rows` key that is no table name is `incomplete`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sbtc_ops.backup.manifest import MANIFEST_NAME
from sbtc_ops.devtools.signer_db import GeneratedDb
from tests.support.cli import CliResult, run_cli
from tests.support.hostile import (
    await_marker_processes,
    detached_shell,
    kill_marker_processes,
    pg_dump,
    plain_with,
    sleep_marker,
)
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.verify import Verifier, VerifyRun, private_tmpdir, take_backup

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

BASE_DB = "crash_base"


@dataclass
class Area:
    root: Path
    facts: GeneratedDb
    clean_plain: Path
    backup_dir: Path  # a backup with its manifest (sbtc-ops backup)
    verify: Verifier

    def run(self, archive: Path) -> VerifyRun:
        return self.verify(str(archive), "--expected-key", self.facts.newest_verified_key.hex())


@pytest.fixture(scope="module")
def area(source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Area]:
    root = tmp_path_factory.mktemp("crash")
    url, facts = new_signer_database(source_server, target_mb=0.1, seed=20, dbname=BASE_DB)
    plain = pg_dump(source_server, BASE_DB, root / "clean.sql", "p")
    _, backup_dir = take_backup(url, root / "repo", root / "state")
    # The backup recorded the base database's schema: the reference of every run.
    verify = Verifier(root / "work", reference_from=root / "state")
    yield Area(root, facts, plain, backup_dir, verify)


def on_database(statement: str) -> str:
    """`statement` with %I for the restored database's name (a dump does not know it)."""
    return f"DO $do$BEGIN EXECUTE format({_literal(statement)}, current_database()); END$do$;"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Each appended to a clean plain dump; all run as the restore role (the database's owner).
DATABASE_CASES = {
    "connection limit 0": on_database("ALTER DATABASE %I CONNECTION LIMIT 0"),
    "allow_connections false": on_database("ALTER DATABASE %I ALLOW_CONNECTIONS false"),
    "local_preload_libraries": on_database("ALTER DATABASE %I SET local_preload_libraries = 'x'"),
    "statement_timeout 1ms": on_database("ALTER DATABASE %I SET statement_timeout = '1ms'"),
    "default_transaction_read_only": on_database(
        "ALTER DATABASE %I SET default_transaction_read_only = on"
    ),
    "search_path": on_database("ALTER DATABASE %I SET search_path = nowhere"),
    "idle_session_timeout": on_database("ALTER DATABASE %I SET idle_session_timeout = '1ms'"),
    "lock_timeout": on_database("ALTER DATABASE %I SET lock_timeout = '1ms'"),
    "client_min_messages": on_database("ALTER DATABASE %I SET client_min_messages = error"),
    "role": on_database("ALTER DATABASE %I SET role = 'pg_read_all_data'"),
    "role-level statement_timeout": "ALTER ROLE CURRENT_USER SET statement_timeout = '1ms';",
    "role-level local_preload_libraries": (
        "ALTER ROLE CURRENT_USER SET local_preload_libraries = 'x';"
    ),
    # Refused to the restore role (a restore error: still a verdict, see REFUSED).
    "session_preload_libraries": on_database(
        "ALTER DATABASE %I SET session_preload_libraries = 'x'"
    ),
}


# The server refuses these to the restore role: a superuser-only setting, and disallowing
# connections to the current database. Still one verdict and one JSON document.
REFUSED = {"session_preload_libraries", "allow_connections false"}
# What the report must name for each case (default: the case's last word, the setting).
NAMED = {
    "connection limit 0": "connection limit",
    "allow_connections false": "ALLOW_CONNECTIONS",
    "statement_timeout 1ms": "statement_timeout",
    "role-level statement_timeout": "statement_timeout",
    "role": "role=pg_read_all_data",
}


def assert_one_verdict(run: VerifyRun, verdicts: set[str]) -> None:
    context = f"stdout={run.result.stdout[-2000:]!r} stderr={run.result.stderr[-2000:]!r}"
    assert "Traceback" not in run.result.stderr, context
    document = json.loads(run.result.stdout)  # exactly one JSON document
    context = json.dumps([c for c in document["checks"] if c["status"] in ("fail", "error")])
    assert document["verdict"] in verdicts, context
    assert run.code == 1, context
    assert document["ok"] is False


@pytest.mark.parametrize("case", list(DATABASE_CASES))
def test_database_level_settings_never_change_the_verdict(area: Area, case: str) -> None:
    target = area.root / f"{case.replace(' ', '-')}.sql"
    archive = plain_with(area.clean_plain, target, DATABASE_CASES[case])
    run = area.run(archive)
    if case in REFUSED:
        assert_one_verdict(run, {"corrupt", "tampered"})
        return
    # Found and named (the settings are part of the schema's identity), never "corrupt" or
    # "incomplete": the reader's session is not cut short, refused or misdirected by them.
    assert_one_verdict(run, {"tampered"})
    failing = {c["id"] for c in run.doc["checks"] if c["status"] == "fail"}
    assert any(c.startswith("schema.") for c in failing), run.doc["checks"]
    assert not failing & {"restore.complete", "schema.present", "rows.match_manifest"}, failing
    named = json.dumps([c for c in run.doc["checks"] if c["id"].startswith("schema.")])
    assert NAMED.get(case, case.split()[-1].split(" ")[0]) in named, named


# (statement appended to a plain dump, the verdict it gets). Reserved names and roles of the
# drill are never created, so an OWNER TO them fails: a restore error, still a verdict. A
# GRANT to "public" is a grant to PUBLIC; a legal odd name is made (quoted) and used.
ROLE_CASES = {
    "owner public": ('ALTER TABLE sbtc_signer.dkg_shares OWNER TO "public";', "corrupt"),
    "owner none": ('ALTER TABLE sbtc_signer.dkg_shares OWNER TO "none";', "corrupt"),
    "owner pg_": ('ALTER TABLE sbtc_signer.dkg_shares OWNER TO "pg_evil";', "corrupt"),
    "owner ours": ('ALTER TABLE sbtc_signer.dkg_shares OWNER TO "sbtc_ops_admin";', "corrupt"),
    "grant public": ('GRANT SELECT ON sbtc_signer.dkg_shares TO "public";', "match"),
    "grant quoted": ('GRANT SELECT ON sbtc_signer.dkg_shares TO "a ""b"" c";', "match"),
    "grant ours": ('GRANT SELECT ON sbtc_signer.dkg_shares TO "sbtc_ops_admin";', "match"),
}


@pytest.mark.parametrize("case", list(ROLE_CASES))
def test_odd_role_names_in_a_plain_dump_get_a_verdict(area: Area, case: str) -> None:
    statement, verdict = ROLE_CASES[case]
    archive = plain_with(area.clean_plain, area.root / f"{case.replace(' ', '-')}.sql", statement)
    run = area.run(archive)
    if verdict == "match":
        failing = [c for c in run.doc["checks"] if c["status"] in ("fail", "error")]
        assert (run.code, run.doc["verdict"]) == (0, "match"), failing
        return
    assert_one_verdict(run, {verdict})
    assert run.check("restore.complete")["status"] == "fail"


def edited_backup(area: Area, name: str, edit: dict[str, object]) -> Path:
    """A copy of the real backup whose manifest has the keys in `edit` replaced."""
    copy = area.root / name
    shutil.copytree(area.backup_dir, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest.update(edit)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return copy


def test_a_member_listed_twice_is_corrupt(area: Area) -> None:
    manifest = json.loads((area.backup_dir / MANIFEST_NAME).read_text())
    files = manifest["files"]
    run = area.run(edited_backup(area, "twice", {"files": [*files, files[0]]}))
    assert_one_verdict(run, {"corrupt"})
    assert "more than once" in run.check("archive.checksum")["detail"]


@pytest.mark.parametrize("key", ["nodot", ".", "sbtc_signer.", 'x".y', "a.b.c"])
def test_a_rows_key_that_is_no_table_is_incomplete(area: Area, key: str) -> None:
    manifest = json.loads((area.backup_dir / MANIFEST_NAME).read_text())
    rows = {**manifest["rows"], key: 1}
    run = area.run(edited_backup(area, f"rows-{abs(hash(key))}", {"rows": rows}))
    assert_one_verdict(run, {"incomplete"})
    assert run.check("rows.match_manifest")["status"] == "fail"


# -- --keep-cluster (issue 20, item 5) --------------------------------------------------------


@dataclass
class Kept:
    run: CliResult
    conninfo: str  # as printed: the reader's
    remove: str  # the printed removal command
    tmpdir: Path


@contextmanager
def kept_cluster(area: Area, archive: Path) -> Iterator[Kept]:
    tmpdir = private_tmpdir()
    remove = None
    try:
        env = area.verify.env(area.verify.fresh_state(), tmpdir, None)
        key = area.facts.newest_verified_key.hex()
        argv = ["verify", str(archive), "--expected-key", key, "--keep-cluster", "--json"]
        result = run_cli(*argv, cwd=area.verify.workdir, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        connect = re.search(r"connect: psql (.+)", result.stderr)
        removal = re.search(r"remove: +(.+)", result.stderr)
        assert connect and removal, result.stderr
        remove = removal.group(1)
        (conninfo,) = shlex.split(connect.group(1))
        yield Kept(result, conninfo, remove, tmpdir)
    finally:
        if remove is not None:
            subprocess.run(["/bin/sh", "-c", remove], check=False, timeout=60)
        assert_no_postgres_left(tmpdir)
        shutil.rmtree(tmpdir, ignore_errors=True)


def session_facts(conninfo: str) -> tuple[str, bool, str, str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles "
            "WHERE rolname = current_user), current_setting('search_path'), "
            "current_setting('default_transaction_read_only')"
        ).fetchone()
    assert row is not None
    return str(row[0]), bool(row[1]), str(row[2]), str(row[3])


def test_kept_clean_cluster_is_reached_as_the_reader(area: Area) -> None:
    with kept_cluster(area, area.clean_plain) as kept:
        assert kept.run.code == 0, kept.run.stderr
        assert "WARNING" not in kept.run.stderr
        assert session_facts(kept.conninfo) == ("sbtc_ops_reader", False, "pg_catalog", "on")


def test_kept_hostile_cluster_warns_and_its_removal_kills_everything(area: Area) -> None:
    marker = sleep_marker()
    archive = plain_with(
        area.clean_plain,
        area.root / "kept-hostile.sql",
        on_database("ALTER DATABASE %I SET search_path = evil, pg_catalog"),
    )
    try:
        with kept_cluster(area, archive) as kept:
            assert kept.run.json()["verdict"] == "tampered"
            assert "WARNING" in kept.run.stderr and "hostile" in kept.run.stderr
            assert "sbtc_ops_admin" not in kept.run.stderr  # never the superuser
            assert session_facts(kept.conninfo)[:3] == ("sbtc_ops_reader", False, "pg_catalog")
            # What a payload run in the kept cluster would leave: detached processes, started
            # by a backend (here by us, as the cluster's superuser, over its socket).
            admin = re.sub(r"user=\S+", "user=sbtc_ops_admin", kept.conninfo)
            with psycopg.connect(admin, autocommit=True) as conn:
                for _ in range(5):
                    # Read COPY's row first: a program that exits unread breaks the pipe.
                    payload = f"cat >/dev/null; {detached_shell(marker)}"
                    conn.execute(f"COPY (SELECT 1) TO PROGRAM {_literal(payload)}")
            assert len(await_marker_processes(marker, 5)) == 5
        # The documented removal (run by kept_cluster's exit) left nothing behind.
        assert await_marker_processes(marker, 0) == []
    finally:
        kill_marker_processes(marker)
