"""`sbtc-ops upgrade-check`: the plan from the release table, and the real command taking and
verifying a backup of a real signer database before a v1.2.0 -> v1.3.3 upgrade."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.signer.knowledge import load
from sbtc_ops.signer.upgrade import plan_upgrade
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import CliResult
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.signer_configs import config_for, to_toml
from tests.support.verify import FAST_CHAIN_ENV, serve_facts

STALE = {
    "bitcoin.block_hash_stream_endpoints": ["tcp://bitcoin:28332"],
    "signer.dkg_target_rounds": 1,
}


def test_plan_from_v1_2_0_to_v1_3_3_names_0021_and_the_key_changes() -> None:
    keys = set(load().keys_at("1.2.0")) | set(STALE)
    plan = plan_upgrade("1.2.0", "1.3.3", keys)
    assert [m["name"] for m in plan.migrations] == [
        "0021__alter_max_fee_column.sql",
        "0022__add_is_canonical_to_bitcoin_blocks.sql",
    ]
    assert [m["name"] for m in plan.destructive] == ["0021__alter_max_fee_column.sql"]
    assert plan.migrations[0]["effect"] == "rewrites"
    assert plan.new_keys == ["bitcoin.fallback_fee", "bitcoin.timeout", "emily.timeout"]
    assert plan.removed_keys == {
        "bitcoin.block_hash_stream_endpoints": "v1.1.0",
        "signer.dkg_target_rounds": "v1.2.0",
    }
    assert plan.missing_required == []
    assert plan.downgrade_migrations == []


def test_plan_over_several_releases_lists_fixed_incidents_and_the_deleting_migration() -> None:
    plan = plan_upgrade("1.0.3", "HEAD", None)
    names = [m["name"] for m in plan.destructive]
    assert names == ["0020__drop_reclaim_script_column.sql", "0021__alter_max_fee_column.sql"]
    ids = [i["id"] for i in plan.incidents]
    assert "sbtc#1761" in ids and "sbtc#2084" in ids
    assert not plan.config_read


def test_plan_of_a_downgrade_names_the_migrations_the_older_release_lacks() -> None:
    plan = plan_upgrade("1.3.3", "1.2.0", set(load().keys_at("1.3.3")))
    assert plan.downgrade_migrations == [
        "0021__alter_max_fee_column.sql",
        "0022__add_is_canonical_to_bitcoin_blocks.sql",
    ]
    assert plan.removed_keys == {}
    assert "bitcoin.timeout" in judge_later(plan.target)


def judge_later(version: str) -> set[str]:
    from sbtc_ops.signer.configkeys import judge_keys

    return set(judge_keys(load().keys_at("1.3.3"), version, load()).not_yet)


def write_setup(workdir: Path, url: str, node: FakeStacksNode, signer_doc: dict[str, Any]) -> Path:
    signer_config = workdir / "signer-config.toml"
    signer_config.write_text(to_toml(signer_doc))
    (workdir / "sbtc-ops.toml").write_text(
        f'[db]\nurl = "{url}"\n\n[backup]\nlocal_dir = "{workdir / "repo"}"\n\n'
        f'[stacks]\nendpoints = ["{node.url}"]\n\n[signer]\nconfig_path = "{signer_config}"\n'
    )
    return signer_config


@pytest.mark.postgres
def test_upgrade_check_backs_up_verifies_and_says_go(
    cli: Callable[..., CliResult], workdir: Path, source_server: SourceServer
) -> None:
    url, facts = new_signer_database(source_server, target_mb=1.0, seed=31)
    with FakeStacksNode(deployer=facts.deployer) as node:
        serve_facts(node, facts)
        write_setup(workdir, url, node, config_for("1.2.0", extra=STALE))
        result = cli(
            "upgrade-check",
            "--to",
            "ghcr.io/stacks-sbtc/sbtc:signer-v1.3.3@sha256:" + "ab" * 32,
            "--from",
            "v1.2.0",
            "--json",
            env=FAST_CHAIN_ENV,
            timeout=240,
        )
    assert result.code == 0, result.stderr
    doc = result.json()
    assert (doc["from"], doc["to"], doc["go"]) == ("1.2.0", "1.3.3", True)
    assert doc["verify"]["verdict"] == "match"
    # The database already has 0021 and 0022 (whatever --from says): nothing left to apply.
    assert "0022__add_is_canonical_to_bitcoin_blocks.sql" in doc["applied_migrations"]
    assert doc["migrations"] == [] and doc["destructive_migrations"] == []
    assert any("not those of v1.2.0 (--from)" in w for w in doc["warnings"])
    assert set(doc["removed_keys"]) == set(STALE)
    assert doc["new_keys"] == ["bitcoin.fallback_fee", "bitcoin.timeout", "emily.timeout"]
    backup_id = doc["backup"]["id"]
    assert (workdir / "repo" / backup_id).is_dir()
    assert any(backup_id in step and "sbtc-ops restore" in step for step in doc["rollback"])
    assert any("signer-v1.2.0" in step for step in doc["rollback"])
    assert source_server.signer_password not in result.stdout + result.stderr
    assert_no_postgres_left(workdir)


@pytest.mark.postgres
def test_upgrade_check_says_no_go_when_the_target_requires_a_missing_key(
    cli: Callable[..., CliResult], workdir: Path, source_server: SourceServer
) -> None:
    url, facts = new_signer_database(source_server, target_mb=0.5, seed=32)
    with FakeStacksNode(deployer=facts.deployer) as node:
        serve_facts(node, facts)
        write_setup(workdir, url, node, config_for("1.2.0", drop=["emily.endpoints"]))
        result = cli(
            "upgrade-check", "--to", "v1.3.3", "--from", "1.2.0", env=FAST_CHAIN_ENV, timeout=240
        )
    assert result.code == 1, result.stderr
    assert "v1.3.3 requires emily.endpoints, not set" in result.stdout
    assert "verdict: NO-GO" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("to", "words"),
    [("latest", "names no signer version"), ("v9.9.9", "not in sbtc-ops' release table")],
)
def test_unknown_targets_are_usage_errors(
    cli: Callable[..., CliResult], to: str, words: str
) -> None:
    result = cli("upgrade-check", "--to", to, "--from", "1.2.0", "--json")
    assert result.code == 2
    assert words in result.json()["error"]
    assert "Traceback" not in result.stderr


def write_db_only(workdir: Path, url: str) -> None:
    (workdir / "sbtc-ops.toml").write_text(f'[db]\nurl = "{url}"\n')


@pytest.mark.postgres
def test_without_from_the_release_is_read_from_the_applied_migrations(
    cli: Callable[..., CliResult], workdir: Path, signer_db: tuple[str, Any]
) -> None:
    url, facts = signer_db
    write_db_only(workdir, url)
    result = cli("upgrade-check", "--to", "v1.3.3", "--plan-only", "--json")
    assert result.code == 0, result.stderr
    # The old spelling of --dry-run still works, and says it is deprecated (stderr only).
    assert "--plan-only is deprecated; use --dry-run" in result.stderr
    doc = result.json()
    assert (doc["from"], doc["from_source"]) == ("1.3.3", "__sbtc_migrations")
    assert doc["applied_migrations"] == facts.migrations
    assert doc["migrations"] == [] and doc["go"] is None and doc["plan_only"] is True
    assert doc["backup"] is None
    assert not (workdir / "repo").exists()


@pytest.mark.postgres
def test_dry_run_prints_a_plan_from_what_is_applied_and_no_verdict(
    cli: Callable[..., CliResult], workdir: Path, signer_db: tuple[str, Any]
) -> None:
    url, _ = signer_db
    write_db_only(workdir, url)
    given = cli("upgrade-check", "--to", "v1.3.3", "--from", "v1.2.0", "--dry-run")
    assert given.code == 0, given.stderr
    assert "0021__alter_max_fee_column.sql" not in given.stdout  # applied already
    assert "not those of v1.2.0 (--from)" in given.stdout
    assert "upgrade plan v1.2.0" in given.stdout
    assert "verdict" not in given.stdout and "NO-GO" not in given.stdout
    assert given.stdout.rstrip().endswith("no go/no-go (run without --dry-run)")
    # A plan that cannot work (the database is ahead of the target) is a problem: exit 1.
    down = cli("upgrade-check", "--to", "v1.2.0", "--dry-run")
    assert down.code == 1, down.stderr
    assert "blocking problems in this plan:" in down.stdout
    assert "0022__add_is_canonical_to_bitcoin_blocks.sql" in down.stdout
    assert "verdict" not in down.stdout and "NO-GO" not in down.stdout


def test_from_is_asked_for_only_when_neither_image_nor_database_answers(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    write_db_only(workdir, "postgresql://signer@127.0.0.1:9/signer?connect_timeout=2")
    result = cli("upgrade-check", "--to", "v1.3.3", "--dry-run", "--json")
    assert result.code == 2
    error = result.json()["error"]
    assert "pass --from" in error and "cannot query the signer database" in error
