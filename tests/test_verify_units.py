"""Pure parts of the restore drill: the roles a plain dump names, the key verdicts."""

from __future__ import annotations

from pathlib import Path

from sbtc_ops.results import Status
from sbtc_ops.verify import checks
from sbtc_ops.verify.drill import plain_dump_roles
from tests.support.verify import random_public_key


def test_roles_of_a_plain_dump_outside_copy_data(tmp_path: Path) -> None:
    dump = tmp_path / "dump.sql"
    dump.write_bytes(
        b"SET client_encoding = 'UTF8';\n"
        b"ALTER SCHEMA sbtc_signer OWNER TO signer;\n"
        b'ALTER TABLE sbtc_signer.t OWNER TO "Odd ""Name";\n'
        b"COPY sbtc_signer.t (a, b) FROM stdin;\n"
        b"ALTER TABLE x OWNER TO inside_copy_data;\n"  # data, not a statement
        b"\\.\n"
        b"COPY sbtc_signer.empty (a) FROM stdin;\n"
        b"\\.\n"
        b"GRANT SELECT ON TABLE sbtc_signer.t TO Reader WITH GRANT OPTION;\n"
        b"GRANT ALL ON SCHEMA public TO PUBLIC;\n"
        b"REVOKE ALL ON SCHEMA public FROM pg_database_owner;\n"
        b"SET SESSION AUTHORIZATION 'bob';\n"
        b"  ALTER TABLE y OWNER TO indented_is_not_pg_dump;\n"
    )
    assert plain_dump_roles(dump) == {"signer", 'Odd "Name', "reader", "pg_database_owner", "bob"}


def test_roles_of_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sql"
    empty.write_bytes(b"")
    assert plain_dump_roles(empty) == set()


def _row(key: bytes, status: str = "verified") -> checks.DkgRow:
    return checks.DkgRow(key, status, "2025-01-01T00:00:00+00:00", [], 11)


def test_key_verdicts() -> None:
    newest, older, other = random_public_key(), random_public_key(), random_public_key()
    rows = [_row(newest), _row(older)]
    result, verdict = checks.matches_chain(newest, rows, newest, set())
    assert (result.status, verdict) == (Status.PASS, "match")
    # The chain holds an older key of this backup (the backup postdates a rotation vote)…
    result, verdict = checks.matches_chain(newest, rows, older, set())
    assert (result.status, verdict) == (Status.FAIL, "stale")
    # …or the backup's key was on chain before and the chain moved on.
    assert checks.matches_chain(newest, rows, other, {newest})[1] == "stale"
    result, verdict = checks.matches_chain(newest, rows, other, set())
    assert (result.status, verdict) == (Status.FAIL, "mismatch")
    result, verdict = checks.matches_chain(newest, rows, None, set())
    assert (result.status, verdict) == (Status.ERROR, "error")


def test_endpoint_agreement() -> None:
    key = random_public_key().hex()
    ok = checks.endpoints_agree([("a", key, None), ("b", key, None)], None)
    assert ok.status == Status.PASS
    one_down = checks.endpoints_agree([("a", key, None), ("b", None, "HTTP 500")], None)
    assert one_down.status == Status.WARN and "HTTP 500" in one_down.detail
    split = checks.endpoints_agree([("a", key, None), ("b", "not set", None)], None)
    assert split.status == Status.FAIL and "disagree" in split.detail
    none = checks.endpoints_agree([("a", None, "refused")], None)
    assert none.status == Status.ERROR
