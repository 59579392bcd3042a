"""The fault matrix of `sbtc-ops verify`: each case asserts the verdict, the failing check,
the exit code, that no postgres process of the run is left and nothing stays in its
temporary directory (tests.support.verify.Verifier checks the last two on every run), and
that no traceback is printed.

One generated signer database, one sbtc-ops backup of it and a few derived databases are
made once for the module; each case breaks one thing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sbtc_ops.clarity import UInt
from sbtc_ops.pg.cluster import free_tcp_port
from tests.fakes.stacks_node import (
    Failure,
    FakeStacksNode,
    html_page,
    http_error,
    invalid_hex,
    slow,
    wrong_type,
)
from tests.support.pg import (
    SourceServer,
    new_signer_database,
)
from tests.support.verify import (
    Verifier,
    VerifyArea,
    VerifyRun,
    operator_dump,
    random_public_key,
    serve_facts,
    stacks_node_for,
    take_backup,
    write_key_file,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

DBNAME = "verify_faults"


@dataclass
class Area(VerifyArea):
    server: SourceServer
    backup_id: str
    backup_dir: Path

    def derived_database(self, name: str, *statements: str) -> str:
        """A copy of the module's database changed by `statements`; returns its URL."""
        with self.server.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {DBNAME} OWNER signer")
        with self.server.connect(name) as conn:
            for statement in statements:
                conn.execute(statement)
        return self.server.url_for(name)

    def verify_backup(self, *args: str, **kwargs: Any) -> VerifyRun:
        """verify the module's backup by id against the fake node (plus `args`)."""
        return self.verify(
            self.backup_id, "--repo", str(self.repo), "--stacks-url", self.node.url, *args, **kwargs
        )

    def copy_of_backup(self, name: str) -> Path:
        target = self.root / name
        shutil.copytree(self.backup_dir, target)
        return target


@pytest.fixture(scope="module")
def area(
    source_server: SourceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Area]:
    root = tmp_path_factory.mktemp("verify-faults")
    url, facts = new_signer_database(source_server, target_mb=3.0, seed=42, dbname=DBNAME)
    repo, state = root / "repo", root / "backup-state"
    backup_id, backup_dir = take_backup(url, repo, state)
    with stacks_node_for(facts) as node:
        yield Area(
            root=root,
            facts=facts,
            node=node,
            repo=repo,
            state=state,
            verify=Verifier(root, reference_from=state),
            server=source_server,
            backup_id=backup_id,
            backup_dir=backup_dir,
        )


@pytest.fixture
def area_with_chain(area: Area) -> Area:
    """The module's area with the fake node serving the right key and no failure armed."""
    serve_facts(area.node, area.facts)
    return area


# -- the archive --------------------------------------------------------------------------------


def test_flipped_byte_fails_the_checksum_before_any_restore(area_with_chain: Area) -> None:
    area = area_with_chain
    copy = area.copy_of_backup("flipped")
    dump = copy / "signer.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    run = area.verify(str(copy), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="corrupt", failing="archive.checksum")
    assert "signer.dump" in check["detail"] and "SHA-256" in check["detail"]
    assert run.check("restore.complete")["status"] == "skip"
    assert "restore" not in run.doc["timings"]  # nothing was restored


def test_truncated_archive_without_manifest_fails_the_restore(area_with_chain: Area) -> None:
    area = area_with_chain
    data = (area.backup_dir / "signer.dump").read_bytes()
    truncated = area.root / "truncated.dump"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    run = area.verify(str(truncated), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="corrupt", failing="restore.complete")
    assert "pg_restore" in check["detail"]
    assert run.check("archive.checksum")["status"] == "skip"


def test_a_file_that_is_no_dump_is_corrupt(area_with_chain: Area) -> None:
    area = area_with_chain
    junk = area.root / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 64)
    run = area.verify(str(junk), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="corrupt", failing="restore.complete")
    assert "not a PostgreSQL dump" in check["detail"]


def test_plain_dump_with_an_error_quotes_the_error(area_with_chain: Area) -> None:
    area = area_with_chain
    plain = operator_dump(area.server, DBNAME, area.root / "broken.sql")
    lines = plain.read_text().splitlines(keepends=True)
    copy_at = next(
        i for i, line in enumerate(lines) if line.startswith("COPY sbtc_signer.bitcoin_blocks ")
    )
    # The first data row's block hash (bytea, hex format) has non-hex digits: the COPY of
    # the table fails, and so do the rows that reference it.
    row = lines[copy_at + 1]
    lines[copy_at + 1] = "\\\\xzz" + row[row.index("\t") :]
    plain.write_text("".join(lines))
    run = area.verify(str(plain), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="corrupt", failing="restore.complete")
    first_error = check["detail"].split(": ", 1)[1]
    assert "broken.sql" in first_error and "ERROR:" in first_error
    assert "invalid hexadecimal digit" in first_error.split(";")[0]


def test_manifest_row_counts_that_do_not_match(area_with_chain: Area) -> None:
    area = area_with_chain
    copy = area.copy_of_backup("rows-edited")
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["rows"]["sbtc_signer.bitcoin_blocks"] += 7
    manifest_path.write_text(json.dumps(manifest, indent=2))
    run = area.verify(str(copy), "--stacks-url", area.node.url)
    # The checksum covers the archive files, not the manifest: it still passes.
    assert run.check("archive.checksum")["status"] == "pass"
    check = run.expect(code=1, verdict="incomplete", failing="rows.match_manifest")
    actual = area.facts.row_counts["bitcoin_blocks"]
    expected = f"sbtc_signer.bitcoin_blocks: {actual} rows, manifest says {actual + 7}"
    assert expected in check["detail"]


# -- the restored data ----------------------------------------------------------------------------


def test_database_that_is_not_a_signer_db(area_with_chain: Area) -> None:
    area = area_with_chain
    with area.server.connect("postgres") as conn:
        conn.execute("CREATE DATABASE verify_not_signer OWNER signer")
    with psycopg.connect(area.server.url_for("verify_not_signer"), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.accounts (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO public.accounts SELECT g, 'n' || g FROM generate_series(1, 50) g")
    dump = operator_dump(area.server, "verify_not_signer", area.root / "other.dump", "-Fc")
    run = area.verify(str(dump), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="incomplete", failing="schema.present")
    assert "not a signer database" in check["detail"]
    assert run.check("restore.complete")["status"] == "pass"
    assert run.doc["db_aggregate_key"] is None


@pytest.mark.parametrize(
    ("name", "statement", "detail"),
    [
        ("verify_empty_dkg", "DELETE FROM sbtc_signer.dkg_shares", "dkg_shares is empty"),
        (
            "verify_no_verified",
            "UPDATE sbtc_signer.dkg_shares SET dkg_shares_status = 'unverified' "
            "WHERE dkg_shares_status = 'verified'",
            "none verified",
        ),
    ],
)
def test_backup_without_a_verified_key(
    area_with_chain: Area, name: str, statement: str, detail: str
) -> None:
    area = area_with_chain
    url = area.derived_database(name, statement)
    repo = area.root / f"repo-{name}"
    take_backup(url, repo, area.state)
    run = area.verify("--latest", "--repo", str(repo), "--stacks-url", area.node.url)
    check = run.expect(code=1, verdict="incomplete", failing="dkg.verified_key_present")
    assert detail in check["detail"]
    assert run.check("rows.match_manifest")["status"] == "pass"
    assert run.doc["db_aggregate_key"] is None
    assert run.doc["onchain_aggregate_key"] == area.facts.newest_verified_key.hex()


def test_signer_schema_of_another_shape_is_reported_not_crashed(area_with_chain: Area) -> None:
    area = area_with_chain
    url = area.derived_database(
        "verify_other_shape",
        "ALTER TABLE sbtc_signer.dkg_shares DROP COLUMN signer_set_public_keys",
    )
    repo = area.root / "repo-other-shape"
    # Its own state: its backup records the other shape as the live schema of that migration
    # level (which would replace the module's reference in the shared state).
    state = area.root / "state-other-shape"
    take_backup(url, repo, state)
    run = area.verify(
        "--latest", "--repo", str(repo), "--stacks-url", area.node.url, state_dir=state
    )
    check = run.expect(code=1, verdict="incomplete", failing="dkg.verified_key_present")
    assert "query on the restored database failed" in check["detail"]
    assert "signer_set_public_keys" in check["detail"]


def test_wrong_signer_key_does_not_decrypt_the_shares(area_with_chain: Area) -> None:
    area = area_with_chain
    wrong = write_key_file(area.root / "wrong.key", bytes.fromhex("11" * 32))
    run = area.verify_backup("--signer-key-file", str(wrong))
    # The backup holds the on-chain key; only the share decryption fails.
    check = run.expect(code=1, verdict="match", failing="dkg.shares_decrypt")
    assert "authentication failed" in check["detail"]
    assert run.problems() == {"dkg.shares_decrypt"}
    assert "11" * 32 not in run.result.stdout + run.result.stderr


# -- the chain -----------------------------------------------------------------------------------


def test_onchain_key_found_nowhere_is_a_mismatch(area_with_chain: Area) -> None:
    area = area_with_chain
    other = random_public_key()
    area.node.set_aggregate_key(other)
    run = area.verify_backup()
    check = run.expect(code=1, verdict="mismatch", failing="dkg.matches_chain")
    assert other.hex() in check["detail"]
    assert run.doc["onchain_aggregate_key"] == other.hex()
    assert run.doc["db_aggregate_key"] == area.facts.newest_verified_key.hex()


def test_onchain_key_equal_to_an_older_row_is_stale(area_with_chain: Area) -> None:
    area = area_with_chain
    older = next(
        k.aggregate_key
        for k in area.facts.keys
        if k.status == "verified" and k.aggregate_key != area.facts.newest_verified_key
    )
    serve_facts(area.node, area.facts, older)
    run = area.verify_backup()
    check = run.expect(code=1, verdict="stale", failing="dkg.matches_chain")
    assert check["detail"].startswith(f"stale: the on-chain key {older.hex()} is an earlier")
    assert run.doc["onchain_aggregate_key"] == older.hex()


def test_backup_key_seen_on_chain_before_a_rotation_is_stale(area_with_chain: Area) -> None:
    """The chain moved on to a key this backup does not hold, but sbtc-ops saw the backup's
    key on chain earlier: the backup predates a rotation (stale), it is not foreign."""
    area = area_with_chain
    state = area.verify.fresh_state()
    first = area.verify_backup(state_dir=state)
    first.expect(code=0, verdict="match")
    area.node.set_aggregate_key(random_public_key())
    later = area.verify_backup(state_dir=state)
    check = later.expect(code=1, verdict="stale", failing="dkg.matches_chain")
    assert "was on chain before; the chain has moved on" in check["detail"]


def test_signer_set_or_threshold_different_on_chain(area_with_chain: Area) -> None:
    area = area_with_chain
    newest = area.facts.newest_verified
    other_set = [*newest.signer_set_public_keys[:-1], random_public_key()]
    area.node.set_signer_data(newest.aggregate_key, other_set, threshold=newest.threshold - 1)
    run = area.verify_backup()
    # The key matches; the DKG row does not describe the on-chain signer set.
    check = run.expect(code=1, verdict="match", failing="dkg.signer_set_matches_chain")
    assert "they differ" in check["detail"]
    threshold = f"threshold {newest.threshold} in the backup, {newest.threshold - 1} on chain"
    assert threshold in check["detail"]
    assert run.problems() == {"dkg.signer_set_matches_chain"}


def test_endpoints_that_disagree(area_with_chain: Area) -> None:
    area = area_with_chain
    with FakeStacksNode(deployer=area.facts.deployer) as other:
        other.set_aggregate_key(random_public_key())
        run = area.verify_backup("--stacks-url", other.url)
    check = run.check("chain.endpoints_agree")
    assert check["status"] == "fail", run.result.stdout
    assert "endpoints disagree" in check["detail"]
    assert area.node.url.split("//")[1] in check["detail"]
    # A problem found (exit 1), but no verdict on the backup: the chain's key is unknown.
    assert run.code == 1
    assert run.doc["ok"] is False
    assert run.doc["verdict"] == "error"
    assert run.doc["onchain_aggregate_key"] is None


def test_registry_without_a_key_yet_means_could_not_verify(area_with_chain: Area) -> None:
    area = area_with_chain
    area.node.set_aggregate_key(None)  # 0x00: before the first DKG round on chain
    run = area.verify_backup()
    check = run.expect(code=2, verdict="error", failing="dkg.matches_chain", status="error")
    assert "not set" in check["detail"]
    assert run.check("chain.endpoints_agree")["status"] == "pass"
    assert "not set" in run.check("chain.endpoints_agree")["detail"]


def _down() -> str:
    return f"http://127.0.0.1:{free_tcp_port()}"


@pytest.mark.parametrize(
    ("case", "failure", "reason"),
    [
        ("down", None, ""),
        ("http-500", http_error(500), "500"),
        ("html-page", html_page(), ""),
        ("timeout", slow(5.0), "tim"),
        ("invalid-hex", invalid_hex(), ""),
        ("wrong-clarity-type", wrong_type(UInt(7)), ""),
    ],
)
def test_single_endpoint_that_cannot_answer_means_could_not_verify(
    area_with_chain: Area, case: str, failure: Failure | None, reason: str
) -> None:
    area = area_with_chain
    url = area.node.url
    if failure is None:
        url = _down()
    else:
        area.node.fail(failure)
    run = area.verify(area.backup_id, "--repo", str(area.repo), "--stacks-url", url)
    check = run.expect(code=2, verdict="error", failing="chain.endpoints_agree", status="error")
    assert "no Stacks endpoint answered" in check["detail"]
    assert reason.lower() in check["detail"].lower()
    assert run.doc["onchain_aggregate_key"] is None
    # The backup itself was still examined.
    assert run.check("restore.complete")["status"] == "pass"
    assert run.doc["db_aggregate_key"] == area.facts.newest_verified_key.hex()


# -- bad usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--latest"),
        (("/nonexistent/dump.sql",), "neither an existing file"),
        (("20990101T000000Z", "--repo", "/nonexistent-repo"), "not found"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    area_with_chain: Area, args: tuple[str, ...], message: str
) -> None:
    area = area_with_chain
    before = len(area.node.requests)
    run = area.verify(*args, "--stacks-url", area.node.url)
    assert run.code == 2
    assert message in run.result.stderr
    assert run.doc["ok"] is False and message in run.doc["error"]
    assert len(area.node.requests) == before  # the chain is not read for nothing
