"""Pure parts of the restore drill: the roles a plain dump names, the key verdicts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from sbtc_ops.backup.plainsql import plain_dump_roles
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.proc import read_capped
from sbtc_ops.results import Status
from sbtc_ops.verify import checks
from sbtc_ops.verify.drill import amcheck_result
from sbtc_ops.verify.render import render_terminal
from sbtc_ops.verify.report import VerifyReport
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


def test_a_key_given_by_hand_is_never_a_rotation() -> None:
    newest, older, typo = random_public_key(), random_public_key(), random_public_key()
    rows = [_row(newest), _row(older)]
    hand = checks.GIVEN_BY_HAND
    result, verdict = checks.matches_chain(newest, rows, newest, set(), hand)
    assert (result.status, verdict) == (Status.PASS, "match")
    assert "expected (given by hand) key" in result.detail
    # Even when history says the backup's key was on chain: a typed key proves no rotation.
    result, verdict = checks.matches_chain(newest, rows, typo, {newest}, hand)
    assert (result.status, verdict) == (Status.FAIL, "mismatch")
    assert "stale" not in result.detail and "moved on" not in result.detail
    assert "the chain was not read" in result.detail
    assert result.remediation is not None and "typo" in result.remediation
    assert result.data == {"db_key": newest.hex(), "expected_key": typo.hex()}
    result, verdict = checks.matches_chain(newest, rows, older, set(), hand)
    assert verdict == "mismatch" and "earlier DKG round in this backup" in result.detail


def test_the_terminal_report_labels_a_key_given_by_hand() -> None:
    key = random_public_key().hex()
    console = Console(record=True, width=200)
    by_hand = VerifyReport("b1", "match", key, None, expected_aggregate_key=key)
    by_hand.key_source = checks.GIVEN_BY_HAND
    render_terminal(by_hand, console)
    text = console.export_text()
    assert f"expected (given by hand) {key}" in text and "on-chain key" not in text
    render_terminal(VerifyReport("b1", "match", key, key), console)
    assert f"on-chain key {key}" in console.export_text()


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


def test_amcheck_failure_quotes_the_first_findings() -> None:
    findings = [
        'heap table "signer.sbtc_signer.dkg_shares", block 0, offset 3:',
        "    line pointer redirection to item at offset 9 exceeds maximum offset 8",
    ]
    result = checks.amcheck(2, findings)
    assert result.status == Status.FAIL
    assert result.detail.startswith('heap table "signer.sbtc_signer.dkg_shares"')
    assert result.remediation
    assert checks.amcheck(0, []).status == Status.PASS


def test_restore_errors_are_quoted_and_counted() -> None:
    errors = [f"pg_restore: error: could not execute query: ERROR:  thing {n}" for n in range(5)]
    result = checks.restore_complete(1, errors, "pg_restore")
    assert result.status == Status.FAIL
    assert result.detail.startswith("5 error(s): pg_restore: error:")
    assert "thing 2" in result.detail and "thing 3" not in result.detail  # the first three
    # "errors ignored on restore" with exit 0 is still a failure.
    ignored = checks.restore_complete(0, ["pg_restore: errors ignored on restore: 2"], "pg_restore")
    assert ignored.status == Status.FAIL


# -- pg_amcheck's report is read capped -------------------------------------------------------------


def _in_sandbox(argv: list[str]) -> tuple[Sandbox, subprocess.Popen[bytes]]:
    sandbox = Sandbox(resolve_run_as(None))
    proc = sandbox.popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return sandbox, proc


@pytest.mark.timeout(60)
def test_a_report_without_end_is_a_failed_check_not_memory() -> None:
    # Standing in for a pg_amcheck that prints without end: `yes` never stops by itself.
    sandbox, proc = _in_sandbox(["/usr/bin/yes", "heap table corrupt"])
    result = amcheck_result(proc, sandbox, max_output=64 << 10)
    assert result.status == Status.FAIL
    assert "more than 64 KiB" in result.detail and "stopped" in result.detail
    assert result.remediation
    assert len(result.data["output"]) == 20  # what is kept of it is bounded too
    assert proc.returncode is not None  # stopped, not left writing into a full pipe


@pytest.mark.timeout(60)
def test_a_report_within_the_cap_is_read_whole() -> None:
    sandbox, proc = _in_sandbox(["/bin/sh", "-c", "echo 'block 7 is corrupt'; exit 2"])
    result = amcheck_result(proc, sandbox, max_output=64 << 10)
    assert result.status == Status.FAIL
    assert result.detail == "block 7 is corrupt"
    sandbox, proc = _in_sandbox(["/bin/true"])
    assert amcheck_result(proc, sandbox).status == Status.PASS


def test_read_capped_keeps_exactly_the_cap() -> None:
    for size, more in ((0, False), (10, False), (11, True)):
        reader = subprocess.Popen(
            ["/usr/bin/head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE
        )
        assert reader.stdout is not None
        with reader.stdout:
            kept, over = read_capped(reader.stdout, 10)
        reader.wait()
        assert (len(kept), over) == (min(size, 10), more)
