"""`sbtc-ops verify` of a backup stored in S3 (a real S3 server, weed): fetched by id or as
the newest, verified, and the downloaded copy removed with the run's other temporary files
(tests.support.verify.Verifier asserts the run's TMPDIR is empty afterwards)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbtc_ops.state import EventKind, StateStore
from tests.support.cli import clean_env, run_cli
from tests.support.pg import (
    SourceServer,
    new_signer_database,
)
from tests.support.s3 import S3Server
from tests.support.verify import Verifier, random_public_key, stacks_node_for

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(300)]


def test_backup_in_s3_is_fetched_verified_and_its_copy_removed(
    source_server: SourceServer,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    url, facts = new_signer_database(source_server, target_mb=3.0, seed=44)
    location = f"s3://{s3_server.create_bucket('verify')}/signer"
    state = tmp_path / "state"
    backup = run_cli(
        "backup", "--db", url, "--to", location, "--json",
        cwd=tmp_path, env=clean_env(state, s3_server.env()),
    )  # fmt: skip
    assert backup.code == 0, backup.stderr
    backup_id = backup.json()["backup"]["id"]
    verify = Verifier(tmp_path / "work")

    with stacks_node_for(facts) as node:
        newest = verify(
            "--latest", "--repo", location, "--stacks-url", node.url,
            env=s3_server.env(), state_dir=state,
        )  # fmt: skip
        newest.expect(code=0, verdict="match")
        assert newest.doc["backup"] == backup_id
        assert newest.check("archive.checksum")["status"] == "pass"
        assert newest.check("rows.match_manifest")["status"] == "pass"
        assert s3_server.secret_key not in newest.result.stdout + newest.result.stderr

        # A key typed by hand that differs (a typo) is a mismatch, never a rotation, even
        # though sbtc-ops saw the backup's key on chain before; it is not remembered as an
        # on-chain key and does not mark the backup failed.
        typed = random_public_key().hex()
        by_hand = verify(
            backup_id, "--repo", location, "--expected-key", typed,
            env=s3_server.env(), state_dir=state,
        )  # fmt: skip
        check = by_hand.expect(code=1, verdict="mismatch", failing="dkg.matches_chain")
        assert "is not the expected (given by hand) key" in check["detail"]
        assert "moved on" not in check["detail"] and "take a new backup" not in str(check)
        assert by_hand.doc["key_source"] == "expected (given by hand)"
        assert by_hand.doc["onchain_aggregate_key"] is None
        assert by_hand.doc["expected_aggregate_key"] == typed
        with StateStore.open(state) as store:
            assert typed not in {e.subject for e in store.events(EventKind.CHAIN_KEY)}
        assert backup_states(state, location, s3_server) == ["verified-ok"]

        # By id, after the chain moved to a key this backup does not hold: sbtc-ops saw the
        # backup's key on chain before (same state directory), so it is stale, and recorded.
        moved_to = random_public_key()
        node.set_aggregate_key(moved_to)
        by_id = verify(
            backup_id, "--repo", location, "--stacks-url", node.url,
            env=s3_server.env(), state_dir=state,
        )  # fmt: skip
    check = by_id.expect(code=1, verdict="stale", failing="dkg.matches_chain")
    assert f"was on chain before; the chain has moved on to {moved_to.hex()}" in check["detail"]
    assert backup_states(state, location, s3_server) == ["verified-failed"]


def backup_states(state: Path, location: str, s3_server: S3Server) -> list[str]:
    env = clean_env(state, s3_server.env())
    listing = run_cli("backups", "--repo", location, "--json", cwd=state.parent, env=env)
    assert listing.code == 0, listing.stderr
    return [row["state"] for row in listing.json()["backups"]]
