"""The packaged signer release table stays consistent as releases are added."""

from __future__ import annotations

import re

import pytest

from sbtc_ops.signer.knowledge import HEAD, KnowledgeError, load, normalise_version, parse

MIGRATION_NAME = re.compile(r"^\d{4}__[a-z0-9_]+\.sql$")


def _key(version: str) -> tuple[int, ...]:
    return (10**6,) if version == HEAD else tuple(int(p) for p in version.split("."))


def test_versions_are_unique_ordered_and_end_with_head() -> None:
    table = load()
    versions = table.versions
    assert versions[0] == "1.0.0"
    assert versions[-1] == HEAD
    assert list(versions) == sorted(versions, key=_key)
    assert len(set(versions)) == len(versions)
    dates = [r.date for r in table.releases]
    assert dates == sorted(dates)
    assert all(re.fullmatch(r"[0-9a-f]{40}", r.commit) for r in table.releases)
    assert len({r.commit for r in table.releases}) == len(table.releases)


def test_migrations_are_cumulative_unique_and_in_file_order() -> None:
    table = load()
    every = table.migrations_at(HEAD)
    assert len(every) == len(set(every)) == 21
    assert all(MIGRATION_NAME.match(m) for m in every)
    assert list(every) == sorted(every)  # the runner applies them in file-name order
    previous: tuple[str, ...] = ()
    for version in table.versions:
        now = table.migrations_at(version)
        assert now[: len(previous)] == previous  # never removes or reorders
        previous = now
    assert every[-1] == "0022__add_is_canonical_to_bitcoin_blocks.sql"
    assert "0002" not in " ".join(every)  # the repository has no 0002


def test_keys_removed_were_added_before_and_required_keys_exist() -> None:
    table = load()
    present: set[str] = set()
    for release in table.releases:
        for key in release.keys_removed:
            assert key in present, f"{release.tag} removes {key}, never added"
        assert not set(release.keys_added) & present, f"{release.tag} re-adds a present key"
        present = (present | set(release.keys_added)) - set(release.keys_removed)
        assert table.required_at(release.version) <= table.keys_at(release.version)
        assert all(re.fullmatch(r"[a-z_]+(\.[a-z0-9_]+)+", k) for k in release.keys_added)
    assert set(table.defaults) <= {k for r in table.releases for k in r.keys_added}


def test_effects_and_incidents_name_known_migrations_and_releases() -> None:
    table = load()
    every = set(table.migrations_at(HEAD))
    assert set(table.migration_effects) <= every
    assert table.migration_effects["0020__drop_reclaim_script_column.sql"].effect == "deletes"
    assert table.migration_effects["0021__alter_max_fee_column.sql"].destroys_data
    ids = [i.id for i in table.incidents]
    assert len(ids) == len(set(ids))
    for incident in table.incidents:
        table.index(incident.fixed_in)  # raises for an unknown release
        assert incident.source


def test_documented_release_facts() -> None:
    table = load()
    assert "bitcoin.block_hash_stream_endpoints" in table.keys_at("1.0.3")
    assert table.removed_by("1.1.0") == {"bitcoin.block_hash_stream_endpoints": "v1.1.0"}
    assert table.removed_by("1.3.3") == {
        "bitcoin.block_hash_stream_endpoints": "v1.1.0",
        "signer.dkg_target_rounds": "v1.2.0",
    }
    assert len(table.migrations_at("1.0.0")) == 13
    assert len(table.migrations_at("1.2.0")) == 19
    assert table.added_in("bitcoin.fallback_fee") == "v1.3.0"
    assert [i.id for i in table.incidents_fixed_between("1.3.3", HEAD)] == [
        "sbtc#2084",
        "sbtc#2088",
        "sbtc#2068",
    ]
    assert table.newest_release.version == "1.3.3"
    assert table.by_commit("11567fc6a111") is table.release("1.3.3")
    assert table.by_commit("zz") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1.3.3", "1.3.3"),
        ("1.2.0", "1.2.0"),
        ("signer-v1.1.0", "1.1.0"),
        ("ghcr.io/stacks-sbtc/sbtc:signer-v1.3.3@sha256:955a", "1.3.3"),
        ("ghcr.io/stacks-sbtc/sbtc:signer-v1.3.0-debian", "1.3.0"),
        ("head", HEAD),
        ("latest", None),
        ("ghcr.io/stacks-sbtc/sbtc:signer-latest", None),
    ],
)
def test_versions_are_read_from_tags_and_image_references(text: str, expected: str | None) -> None:
    assert normalise_version(text) == expected


def test_unknown_version_and_malformed_tables_are_clear_errors() -> None:
    with pytest.raises(KnowledgeError, match="not in sbtc-ops' release table"):
        load().release("9.9.9")
    with pytest.raises(KnowledgeError, match="schema"):
        parse("schema = 2\n")
    with pytest.raises(KnowledgeError, match="list of strings"):
        parse(
            'schema = 1\nrepository = "r"\nimage = "i"\nimage_tag_prefix = "p"\n'
            '[[release]]\nversion = "1.0.0"\ndate = "d"\ncommit = "c"\nsource = "s"\n'
            "migrations_added = 3\n"
        )


def test_the_table_ships_in_the_wheel() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["sbtc_ops"]
    assert "**/*.toml" in patterns
