"""The schema references (verify/reference.py, state.py, signer/schema_refs.py) and the
verdicts of schema.reference / schema.identity, without PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbtc_ops.pg.schema_identity import CanonicalSchema
from sbtc_ops.results import Status
from sbtc_ops.signer.knowledge import KnowledgeError
from sbtc_ops.signer.schema_refs import SchemaTable, load, object_digest, parse
from sbtc_ops.state import EventKind, StateStore
from sbtc_ops.verify import checks
from sbtc_ops.verify.reference import find_reference

MIGRATIONS = ["0001__create_tables.sql", "0003__next.sql"]
SCHEMA = CanonicalSchema({"schema sbtc_signer": "{}", "table sbtc_signer.dkg_shares": "{}"})


def _shipped(digest: str, objects: list[str], *, with_object_digests: bool = False) -> str:
    listed = ", ".join(f'"{o}"' for o in sorted(objects))
    text = (
        'schema = 1\npostgres = "18.6"\n[[level]]\nrelease = "v1.0.0"\n'
        'migrations = ["0001__create_tables.sql", "0003__next.sql"]\n'
        f'newest = "0003__next.sql"\ndigest = "{digest}"\nobjects = [{listed}]\n'
    )
    if with_object_digests:
        digests = ", ".join(f'"{object_digest(SCHEMA.objects[o])}"' for o in sorted(objects))
        text += f"object_digests = [{digests}]\n"
    return text


def parse_levels(text: str) -> SchemaTable:
    return parse(text)


def test_the_packaged_table_loads() -> None:
    for level in load().levels:
        assert level.migrations == tuple(sorted(level.migrations)) and len(level.digest) == 64


def test_a_malformed_table_is_a_knowledge_error() -> None:
    with pytest.raises(KnowledgeError, match="64 lowercase hex"):
        parse_levels(_shipped("not-hex", ["schema s"]))
    with pytest.raises(KnowledgeError, match="must be a non-empty"):
        parse_levels('schema = 1\npostgres = "18"\n[[level]]\nrelease = "v1.0.0"\n')


def test_live_reference_comes_first_and_names_changed_objects(tmp_path: Path) -> None:
    shipped = parse_levels(_shipped("0" * 64, list(SCHEMA.objects)))
    with StateStore.open(tmp_path) as store:
        assert store.record_schema_reference(MIGRATIONS, SCHEMA.digest, SCHEMA.to_json(), "pin")
        assert not store.record_schema_reference(
            MIGRATIONS, SCHEMA.digest, SCHEMA.to_json(), "backup x"
        )
        assert store.last_event(EventKind.SCHEMA_REFERENCE) is not None
    found = find_reference(tmp_path, list(reversed(MIGRATIONS)), shipped)
    assert found is not None and found.origin == "live"
    changed = CanonicalSchema({**SCHEMA.objects, "table sbtc_signer.dkg_shares": '{"rls":true}'})
    assert found.compare(SCHEMA) == []
    assert found.compare(changed) == ["changed table sbtc_signer.dkg_shares"]


def test_shipped_reference_when_no_live_one(tmp_path: Path) -> None:
    shipped = parse_levels(_shipped(SCHEMA.digest, list(SCHEMA.objects)))
    found = find_reference(tmp_path, MIGRATIONS, shipped)
    assert found is not None and found.origin == "shipped" and "v1.0.0" in found.described
    assert found.compare(SCHEMA) == []
    extra = CanonicalSchema({**SCHEMA.objects, "function public.f()": "{}"})
    assert found.compare(extra) == ["added function public.f()"]
    body = CanonicalSchema({**SCHEMA.objects, "schema sbtc_signer": "{x}"})
    assert found.compare(body)[0].startswith("changed: a definition differs")
    # With the per-object digests the generated table carries, the changed object is named.
    named = find_reference(
        tmp_path,
        MIGRATIONS,
        parse_levels(_shipped(SCHEMA.digest, list(SCHEMA.objects), with_object_digests=True)),
    )
    assert named is not None and named.compare(body) == ["changed schema sbtc_signer"]
    assert find_reference(tmp_path, ["0001__create_tables.sql"], shipped) is None
    assert find_reference(tmp_path, [], shipped) is None


def test_no_reference_is_unknown_schema_and_identity_is_skipped() -> None:
    reference = checks.schema_reference(MIGRATIONS, None)
    assert reference.status == Status.FAIL and "schema pin" in (reference.remediation or "")
    assert checks.schema_identity(SCHEMA, None, True).status == Status.SKIP
    assert checks.verdict_for_failures({"schema.reference"}) == checks.Verdict.UNKNOWN_SCHEMA
    both = {"schema.identity", "migrations.present", "schema.reference"}
    assert checks.verdict_for_failures(both) == checks.Verdict.TAMPERED
    assert checks.verdict_for_failures({"schema.reference", "migrations.present"}) == (
        checks.Verdict.INCOMPLETE
    )


def test_a_failed_restore_excuses_missing_objects_only(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        store.record_schema_reference(MIGRATIONS, SCHEMA.digest, SCHEMA.to_json(), "pin")
    reference = find_reference(tmp_path, MIGRATIONS, SchemaTable(levels=(), postgres="18"))
    partial = CanonicalSchema({"schema sbtc_signer": "{}"})
    assert checks.schema_identity(partial, reference, restore_ok=False).status == Status.SKIP
    assert checks.schema_identity(partial, reference, restore_ok=True).status == Status.FAIL
    added = CanonicalSchema({**partial.objects, "function public.\x1b[31mf()": "{}"})
    failed = checks.schema_identity(added, reference, restore_ok=False)
    assert failed.status == Status.FAIL and "\x1b" not in failed.detail
    assert "added function public.\\x1b[31mf()" in failed.detail
