"""The shipped schema references (signer/schema_digests.toml): consistent with the release
table, strictly parsed, looked up by exact migration list, and never the generator's schema.

tests/test_schema_real_migrations.py checks the digests themselves against the real
migrations when a stacks-sbtc/sbtc repository is present.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.devtools.signer_db import MIGRATIONS, generate
from sbtc_ops.devtools.signer_migrations import Migration
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg import ThrowawayCluster
from sbtc_ops.pg.schema_identity import read_canonical_schema
from sbtc_ops.signer import schema_refs
from sbtc_ops.signer.knowledge import HEAD
from sbtc_ops.signer.knowledge import load as load_releases
from sbtc_ops.signer.schema_refs import SchemaTableError, load, object_digest, parse
from tests.support.pg import SourceServer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "schema_digests.py"
TEXT = resources.files("sbtc_ops.signer").joinpath("schema_digests.toml").read_text("utf-8")


def test_every_release_has_its_level() -> None:
    releases, table = load_releases(), load()
    for release in releases.releases:
        level = table.for_release(release.tag)
        assert level is not None, release.tag
        assert level.migrations == tuple(sorted(releases.migrations_at(release.version)))
        assert table.for_migrations(releases.migrations_at(release.version)) is level
    listed = [tag for level in table.levels for tag in level.releases]
    assert listed == [r.tag for r in releases.releases]  # each once, oldest first


def test_levels_are_well_formed() -> None:
    table = load()
    assert len(table.levels) == 5
    assert re.fullmatch(r"\d+(\.\d+)?", table.postgres)
    sizes = [len(level.migrations) for level in table.levels]
    assert sizes == sorted(sizes) == [13, 14, 18, 19, 21]
    for level in table.levels:
        assert re.fullmatch(r"[0-9a-f]{64}", level.digest)
        assert level.newest == level.migrations[-1]
        tagged = [r for r in level.releases if r != HEAD]
        assert level.release == tagged[-1]
        assert "table sbtc_signer.dkg_shares" in level.objects
        assert "column public.__sbtc_migrations.key" in level.objects
        # Names only: no definition, no SQL.
        assert not any(
            re.search(r"(?i)\b(select|create|begin|returns?)\b|[{}$;]", o) for o in level.objects
        )
    assert len({level.digest for level in table.levels}) == len(table.levels)
    assert table.levels[-1].migrations == MIGRATIONS
    assert table.levels[-1].describe().startswith("v1.3.0–v1.3.3 (21 migrations, newest 0022__")


def test_lookups_need_the_exact_migration_list() -> None:
    table = load()
    newest = table.levels[-1]
    assert table.for_migrations(reversed(newest.migrations)) is newest
    assert table.for_migrations(newest.migrations[:-1]) is None
    assert table.for_migrations([*newest.migrations, "0023__future.sql"]) is None
    assert table.for_migrations([]) is None
    assert table.for_release("1.3.3") is table.for_release("v1.3.3") is newest
    assert table.for_release("HEAD") is newest
    assert table.for_release("v9.9.9") is None
    assert table.for_digest(newest.digest) is newest
    assert table.for_digest("0" * 64) is None


def _toml(doc: dict[str, Any]) -> str:
    """A table of top-level scalars and [[level]] tables of strings and lists of strings
    (JSON's string syntax is TOML's for these)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in doc.items() if k != "level"]
    for level in doc.get("level", []):
        lines += ["[[level]]", *(f"{k} = {json.dumps(v)}" for k, v in level.items())]
    return "\n".join(lines) + "\n"


def _changed(**changes: Any) -> str:
    """The shipped table with the first level's keys changed (None: removed)."""
    doc = tomllib.loads(TEXT)
    first = doc["level"][0]
    for key, value in changes.items():
        if value is None:
            first.pop(key)
        else:
            first[key] = value
    return _toml(doc)


def _top(**changes: Any) -> str:
    doc = tomllib.loads(TEXT)
    doc.update(changes)
    return _toml(doc)


def _upper_object_digests() -> str:
    doc = tomllib.loads(TEXT)
    doc["level"][0]["object_digests"] = [d.upper() for d in doc["level"][0]["object_digests"]]
    return _toml(doc)


def _duplicated_level() -> str:
    doc = tomllib.loads(TEXT)
    doc["level"].append(dict(doc["level"][0]))
    return _toml(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schema = 1\n", "no \\[\\[level\\]\\]"),
        (_top(schema=2), "unsupported schema"),
        (TEXT + "[[level\n", "not valid TOML"),
        (_top(postgres=18), "postgres must be a non-empty string"),
        (_changed(digest="ABC"), "64 lowercase hex"),
        (_changed(digest="A" * 64), "64 lowercase hex"),
        (_changed(digest=None), "digest must be"),
        (_changed(newest="0013__consolidate_withdrawal_tables.sql"), "newest"),
        (_changed(release="v9.9.9"), "hold release"),
        (_changed(releases=["1.0.0"], release="1.0.0"), "must be tags"),
        (_changed(migrations=["0003__b.sql", "0001__a.sql"]), "sorted and unique"),
        (_changed(migrations=["0001__a.sql", "0001__a.sql"]), "sorted and unique"),
        (_changed(migrations=["../../etc/passwd"], newest="../../etc/passwd"), "migration names"),
        (_changed(migrations="0001__a.sql"), "non-empty list"),
        (_changed(objects=[]), "non-empty list"),
        (_changed(objects=["table b", "table a"]), "sorted and unique"),
        (_duplicated_level(), "same migration list"),
        (_changed(object_digests=["0" * 16]), "object_digests must match objects"),
        (_upper_object_digests(), "object_digests must match objects"),
    ],
)
def test_malformed_tables_are_refused(text: str, message: str) -> None:
    with pytest.raises(SchemaTableError, match=message):
        parse(text)


def test_a_table_without_releases_lists_its_one_release() -> None:
    table = parse(_changed(releases=None))
    assert table.levels[0].releases == (table.levels[0].release,)


def test_differences_name_added_removed_and_changed_objects() -> None:
    level = load().levels[-1]
    assert level.object_digests and len(level.object_digests) == len(level.objects)
    same = {key: f"definition of {key}" for key in level.objects}
    # Definitions are not in the table: every object of a made-up schema "changed".
    assert len(level.differences(same)) == len(level.objects)
    fake = schema_refs.SchemaLevel(
        release="v1.0.0",
        releases=("v1.0.0",),
        migrations=("0001__a.sql",),
        newest="0001__a.sql",
        digest="0" * 64,
        objects=("schema s", "table s.t"),
        object_digests=(object_digest("{}"), object_digest('{"rls": false}')),
    )
    assert fake.differences({"schema s": "{}", "table s.t": '{"rls": false}'}) == []
    assert fake.differences({"schema s": "{}", "table s.t": '{"rls": true}', "x y": ""}) == [
        "changed table s.t",
        "added x y",
    ]
    assert fake.differences({"table s.t": '{"rls": false}'}) == ["removed schema s"]
    no_digests = schema_refs.SchemaLevel(**{**fake.__dict__, "object_digests": ()})
    assert no_digests.differences({"schema s": "x", "table s.t": "y"}) == []


def test_shipped_text_round_trips() -> None:
    assert parse(TEXT) == load()
    assert schema_refs.TABLE_NAME == "schema_digests.toml"


@pytest.mark.postgres
def test_generator_schema_has_the_real_objects_but_is_not_in_the_table(
    source_server: SourceServer,
) -> None:
    """Our DDL reproduces every object of the real schema at 0022, and its own function
    bodies keep its digest out of the shipped table (it is never a reference)."""
    source_server.cluster.create_database("schema_refs_generated")
    with source_server.connect("schema_refs_generated") as conn:
        facts = generate(conn, target_mb=0.5, seed=9)
        ours = read_canonical_schema(conn)
    table = load()
    assert table.for_digest(ours.digest) is None
    level = table.for_migrations(facts.migrations)
    assert level is table.levels[-1]
    assert tuple(sorted(ours.objects)) == level.objects
    # Every definition but the four function bodies (ours) is the real one.
    assert level.differences(ours.objects) == [
        "changed function sbtc_signer.bitcoin_blockchain_of(bytea,integer)",
        "changed function sbtc_signer.bitcoin_blockchain_until(bytea,bigint)",
        "changed function sbtc_signer.reverse_bytea(bytea)",
        "changed function sbtc_signer.stacks_blockchain_of(bytea,bytea,integer)",
    ]


# -- the maintainer script, without the signer's repository ------------------------------------


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("schema_digests_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_script_refuses_what_is_not_a_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "is not a git repository" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.postgres
def test_script_reports_a_failing_migration_without_its_sql() -> None:
    script = _script()
    bad = Migration("0001__bad.sql", "0" * 40, b"CREATE TABLE secret_sql_text (;")
    level = script.Level(["v9.9.9"], [bad])
    with ThrowawayCluster() as cluster, pytest.raises(SbtcOpsError) as raised:
        script.apply_level(cluster, "level_bad", level)
    message = str(raised.value)
    assert "0001__bad.sql" in message and "42601" in message
    assert "secret_sql_text" not in message and "CREATE" not in message
