"""Schema identity: one archive per object class (tests/support/schema_corpus.py), each alone,
in custom and plain format, gets verdict `tampered` naming the object; clean backups match;
the DR restore refuses every tampered archive with the target untouched; --force-unverified
restores and is recorded; no reference gives `unknown-schema`. Sources on PostgreSQL 15 and
18 have the same canonical schema and their dumps in every format match.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from sbtc_ops.devtools.signer_db import generate
from sbtc_ops.pg import ThrowawayCluster, find_binaries
from sbtc_ops.pg.schema_identity import (
    CanonicalSchema,
    _query,
    differences,
    read_canonical_schema,
)
from sbtc_ops.state import EventKind, StateStore
from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.hostile import copy_database, pg_dump, plain_with
from tests.support.pg import SIGNER_ROLE, SourceServer, new_signer_database
from tests.support.schema_corpus import (
    BY_NAME,
    CATALOG_CASES,
    PLAIN_ONLY_CASES,
    TEST_ONLY_MIGRATION,
)
from tests.support.verify import Verifier, VerifyRun, pin_schema, private_tmpdir

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

BASE_DB = "identity_base"
FORMATS = {"custom": "c", "plain": "p"}
_numbers = itertools.count(1)


@dataclass
class Corpus:
    root: Path
    server: SourceServer
    key: str
    state: Path  # holds the base DB's schema as the live reference
    verify: Verifier
    archives: dict[tuple[str, str], Path] = field(default_factory=dict)

    def clean(self, fmt: str) -> Path:
        return self.archive("clean", fmt)

    def archive(self, case: str, fmt: str) -> Path:
        """The case's archive in format `fmt`, built on first use."""
        if (case, fmt) not in self.archives:
            suffix = "sql" if fmt == "plain" else "dump"
            target = self.root / f"{case}.{suffix}"
            spec = BY_NAME.get(case)
            if spec is not None and spec.plain_only is not None:
                plain_with(self.clean("plain"), target, spec.plain_only)
            else:
                dbname = BASE_DB
                if spec is not None:
                    dbname = f"identity_{case.replace('-', '_')}"
                    if (case, "db") not in self.archives:
                        copy_database(self.server, BASE_DB, dbname, list(spec.statements))
                        self.archives[(case, "db")] = Path(dbname)
                pg_dump(self.server, dbname, target, FORMATS[fmt])
            self.archives[(case, fmt)] = target
        return self.archives[(case, fmt)]

    def run(self, archive: Path, state_dir: Path | None = None) -> VerifyRun:
        return self.verify(str(archive), "--expected-key", self.key, state_dir=state_dir)


@pytest.fixture(scope="module")
def corpus(source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("identity")
    url, facts = new_signer_database(source_server, target_mb=0.1, seed=20, dbname=BASE_DB)
    with source_server.connect(BASE_DB) as conn:
        conn.execute(TEST_ONLY_MIGRATION)
    state = root / "reference-state"
    pin_schema(url, state)
    key = facts.newest_verified_key.hex()
    return Corpus(root, source_server, key, state, Verifier(root / "work", reference_from=state))


def _canonical(server: SourceServer, dbname: str) -> CanonicalSchema:
    with server.connect(dbname) as conn:
        return read_canonical_schema(conn)


# -- the canonical form --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CATALOG_CASES)
def test_canonical_form_names_the_one_changed_object(corpus: Corpus, case: str) -> None:
    corpus.archive(case, "custom")  # makes the variant database
    base = _canonical(corpus.server, BASE_DB)
    variant = _canonical(corpus.server, f"identity_{case.replace('-', '_')}")
    found = differences(base, variant)
    assert base.digest != variant.digest
    for name in BY_NAME[case].names:
        assert any(name in line for line in found), (name, found)


def test_canonical_form_is_independent_of_creation_order_and_oids(corpus: Corpus) -> None:
    """The same objects made in another order (other OIDs, attnums after a dropped column)
    give the same form."""
    first, second = (f"identity_order_{next(_numbers)}" for _ in range(2))
    extra = (
        "CREATE TABLE public.a (x integer DEFAULT 1, y text)",
        "CREATE INDEX a_y ON public.a (y)",
        "CREATE TABLE public.b (z bytea)",
    )
    copy_database(corpus.server, BASE_DB, first, list(extra))
    copy_database(
        corpus.server,
        BASE_DB,
        second,
        [
            "CREATE TABLE public.b (z bytea, dropped integer)",
            "ALTER TABLE public.b DROP COLUMN dropped",
            "CREATE TABLE public.a (x integer, y text)",
            "ALTER TABLE public.a ALTER COLUMN x SET DEFAULT 1",
            "CREATE INDEX a_y ON public.a (y)",
        ],
    )
    assert _canonical(corpus.server, first).objects == _canonical(corpus.server, second).objects


def test_canonical_form_round_trips_json_and_escapes_names() -> None:
    schema = CanonicalSchema({"table public.\x1b[2Jx": "{}", "schema public": "{}"})
    assert CanonicalSchema.from_json(schema.to_json()) == schema
    found = differences(CanonicalSchema({"schema public": "{}"}), schema)
    assert found == ["added table public.\\x1b[2Jx"]
    assert "\x1b" not in "".join(found)
    many = CanonicalSchema({f"table public.t{i}": "{}" for i in range(80)})
    assert differences(CanonicalSchema(), many, limit=10)[-1] == "and 70 more"


def test_identity_query_reads_only_the_catalog(corpus: Corpus) -> None:
    """Its cost does not grow with the data: the plan touches catalog relations only."""
    with corpus.server.connect(BASE_DB) as conn:
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) " + _query(True),
            {"excluded": ["pg_catalog"], "cap": 10, "maxdef": 10, "first_oid": 16384},
        ).fetchone()
    assert plan is not None
    relations = set(_relation_names(plan[0]))
    assert relations and all(r.startswith("pg_") for r in relations), relations


def _relation_names(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if "Relation Name" in node:
            yield str(node["Relation Name"])
        for value in node.values():
            yield from _relation_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _relation_names(item)


# -- the drill -----------------------------------------------------------------------------------


def _expect_tampered(run: VerifyRun, names: tuple[str, ...]) -> None:
    check = run.expect(code=1, verdict="tampered", failing="schema.identity")
    shown = check["detail"] + " ".join(check.get("data", {}).get("differences", []))
    for name in names:
        assert name in shown, (name, check)


@pytest.mark.parametrize("case", CATALOG_CASES)
def test_tampered_custom_archive_is_tampered_naming_the_object(corpus: Corpus, case: str) -> None:
    run = corpus.run(corpus.archive(case, "custom"))
    _expect_tampered(run, BY_NAME[case].names)


@pytest.mark.slow
@pytest.mark.parametrize("case", [*CATALOG_CASES, *PLAIN_ONLY_CASES])
def test_tampered_plain_archive_is_tampered_naming_the_object(corpus: Corpus, case: str) -> None:
    run = corpus.run(corpus.archive(case, "plain"))
    _expect_tampered(run, BY_NAME[case].names)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_clean_archive_matches(corpus: Corpus, fmt: str) -> None:
    run = corpus.run(corpus.clean(fmt))
    run.expect(code=0, verdict="match")
    assert run.check("schema.reference")["data"]["origin"] == "live"
    assert run.check("schema.identity")["status"] == "pass"


def test_no_reference_is_unknown_schema(corpus: Corpus) -> None:
    bare = Verifier(corpus.root / "bare")  # a DR host that never saw the live database
    run = bare(str(corpus.clean("custom")), "--expected-key", corpus.key)
    check = run.expect(code=1, verdict="unknown-schema", failing="schema.reference")
    assert "sbtc-ops schema pin" in check["remediation"]
    assert run.check("schema.identity")["status"] == "skip"


def test_generated_schema_on_a_bare_host_is_checked_against_the_shipped_release(
    corpus: Corpus,
) -> None:
    """At the real v1.3.x level (the test-only migration removed) the shipped table is the
    reference; the generator's function bodies are ours, not the signer's: named, never
    `match`."""
    dbname, target = "identity_release_level", corpus.root / "release-level.dump"
    copy_database(
        corpus.server,
        BASE_DB,
        dbname,
        ["DELETE FROM public.__sbtc_migrations WHERE key LIKE '9999%'"],
    )
    pg_dump(corpus.server, dbname, target, FORMATS["custom"])
    run = Verifier(corpus.root / "bare-generated")(str(target), "--expected-key", corpus.key)
    check = run.expect(code=1, verdict="tampered", failing="schema.identity")
    assert "shipped with sbtc-ops" in run.check("schema.reference")["detail"]
    text = json.dumps(check)
    assert "changed function sbtc_signer.reverse_bytea(bytea)" in text
    assert "dkg_shares" not in text  # every other object is the real one


# -- the restore gate ----------------------------------------------------------------------------


def _restore(corpus: Corpus, archive: Path, target: str, *flags: str) -> CliResult:
    tmpdir = private_tmpdir()
    result = run_cli(
        "restore",
        str(archive),
        "--target-db",
        target,
        "--json",
        *flags,
        cwd=corpus.root,
        env=clean_env(corpus.state, {"TMPDIR": str(tmpdir)}),
        timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _new_target(corpus: Corpus) -> str:
    return corpus.server.create_signer_database(f"identity_target_{next(_numbers)}")


def _untouched(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname !~ '^pg_toast'"
        ).fetchone()
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'sbtc_signer'"
        ).fetchone()
    return row is not None and schemas is not None and row[0] == 0 and schemas[0] == 0


def _assert_refused(corpus: Corpus, case: str, fmt: str) -> None:
    target = _new_target(corpus)
    refused = _restore(corpus, corpus.archive(case, fmt), target)
    assert refused.code == 1, refused.stderr
    doc = refused.json()
    assert doc["ok"] is False and doc["refused"] is True
    problems = " ".join(doc["identity"]["problems"])
    assert "schema.identity" in problems, doc
    assert _untouched(target), f"{case}: the target was written"


def test_restore_gate_refuses_a_changed_function_body(corpus: Corpus) -> None:
    _assert_refused(corpus, "function-body", "custom")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "fmt"),
    [(c, "custom") for c in CATALOG_CASES if c != "function-body"]
    + [(c, "plain") for c in PLAIN_ONLY_CASES],
)
def test_restore_gate_refuses_every_tampered_archive(corpus: Corpus, case: str, fmt: str) -> None:
    _assert_refused(corpus, case, fmt)


def test_force_unverified_restores_and_is_recorded(corpus: Corpus) -> None:
    target = _new_target(corpus)
    forced = _restore(
        corpus, corpus.archive("function-body", "custom"), target, "--force-unverified"
    )
    assert forced.code == 1, forced.stderr  # restored, but a problem: not proven
    doc = forced.json()
    assert doc["refused"] is False and doc["forced_unverified"] is True
    assert "WARNING: --force-unverified" in forced.stderr
    assert not _untouched(target)
    with StateStore.open(corpus.state) as store:
        event = store.last_event(EventKind.RESTORE)
    assert event is not None and event.outcome == "restored-unverified"
    assert event.data["force_unverified"] is True and event.data["problems"]


def test_restore_gate_lets_a_clean_plain_dump_through_without_owners(corpus: Corpus) -> None:
    target = _new_target(corpus)
    restored = _restore(corpus, corpus.clean("plain"), target)
    assert restored.code == 0, restored.stderr
    doc = restored.json()
    assert doc["identity"]["verified"] is True and "--no-owner" in doc["not_restored"]
    with psycopg.connect(target, autocommit=True) as conn:
        owners = {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sbtc_signer'"
            )
        }
    assert owners == {SIGNER_ROLE}  # the connecting role owns everything: no owner replayed


# -- PostgreSQL 15 sources -------------------------------------------------------------------------

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def pg15_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A PostgreSQL 15 server (Debian's postgresql-15) holding the generated signer DB:
    (its TCP URL, the superuser conninfo)."""
    if not (PG15_BIN / "postgres").exists():
        pytest.skip("PostgreSQL 15 server binaries not installed (apt-get install postgresql-15)")
    binaries = find_binaries(PG15_BIN, tool_hint="postgres")
    parent = private_tmpdir("sb15-")
    cluster = ThrowawayCluster(binaries, parent=parent, tcp_port=0)
    cluster.start()
    try:
        cluster.create_role(SIGNER_ROLE, "pw-identity15")
        cluster.create_database("signer", owner=SIGNER_ROLE)
        url = cluster.tcp_url("signer", SIGNER_ROLE, "pw-identity15")
        generate(url, target_mb=0.1, seed=20)
        with cluster.connect("signer") as conn:
            conn.execute(TEST_ONLY_MIGRATION)
        yield url, cluster.conninfo("signer")
    finally:
        cluster.stop()


def test_pg15_and_pg18_sources_have_the_same_canonical_schema(
    corpus: Corpus, pg15_source: tuple[str, str]
) -> None:
    with psycopg.connect(pg15_source[1], autocommit=True) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        on15 = read_canonical_schema(conn)
    assert version is not None and str(version[0]).startswith("15")
    on18 = _canonical(corpus.server, BASE_DB)
    assert differences(on18, on15) == []
    assert on15.digest == on18.digest


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["c", "d", "t", "p"])
def test_pg15_dumps_in_every_format_match(
    corpus: Corpus, pg15_source: tuple[str, str], fmt: str
) -> None:
    """Dumped from PostgreSQL 15 (by pg_dump 18, as a host with newer tools does), restored
    into the drill's PostgreSQL 18: identical to the reference pinned from the 15 server."""
    url, superuser = pg15_source
    state = corpus.root / f"state-15-{fmt}"
    pin = pin_schema(url, state)
    target = corpus.root / f"pg15.{fmt}"
    argv = [
        str(find_binaries(tool_hint="pg_dump").pg_dump),
        f"--dbname={superuser}",
        f"--format={fmt}",
        f"--file={target}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    run = Verifier(corpus.root / f"work-15-{fmt}", reference_from=state)(
        str(target), "--expected-key", corpus.key
    )
    run.expect(code=0, verdict="match")
    assert run.check("schema.identity")["data"]["digest"] == pin["digest"]
    assert json.loads(json.dumps(pin))["objects"] > 100


# -- schema pin ----------------------------------------------------------------------------------


def test_schema_pin_records_once_and_refuses_a_database_without_migrations(
    corpus: Corpus, tmp_path: Path
) -> None:
    url = corpus.server.url_for(BASE_DB)
    first = pin_schema(url, tmp_path / "state")
    again = pin_schema(url, tmp_path / "state")
    assert first["ok"] is True and first["changed"] is True and again["changed"] is False
    assert first["newest_migration"] == "9999__sbtc_ops_test_only_level.sql"
    assert len(first["digest"]) == 64 and first["digest"] == again["digest"]
    empty = corpus.server.create_signer_database(f"identity_empty_{next(_numbers)}")
    refused = run_cli(
        "schema", "pin", "--db", empty, "--json", cwd=tmp_path, env=clean_env(tmp_path / "s2")
    )
    assert refused.code == 2, refused.stdout
    assert "__sbtc_migrations" in refused.json()["error"]
    assert corpus.server.signer_password not in refused.stdout + refused.stderr
