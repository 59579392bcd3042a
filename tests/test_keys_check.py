"""`key check`: each check against real files, a real state store and the fake Stacks node."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.config import KeySettings, Settings
from sbtc_ops.discover.load import load_settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.keys.chain import read_onchain_signer_set
from sbtc_ops.keys.check import (
    KeyFacts,
    check_bootstrap_set,
    check_cold_backup,
    check_file_mode,
    check_not_well_known,
    check_onchain_set,
    check_owner,
)
from sbtc_ops.keys.material import KeySource
from sbtc_ops.keys.service import check_key
from sbtc_ops.results import Status
from sbtc_ops.state import EventKind, StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.keys import SampleKey, new_key, signer_config, write_private

DAY = 86400.0


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"state_dir": str(tmp_path / "state")}
    base.update(overrides)
    return load_settings(overrides=base, environ={})


def node_settings(tmp_path: Path, *urls: str) -> Settings:
    stacks = {"endpoints": list(urls), "retries": 0, "timeout_s": 3, "connect_timeout_s": 1}
    return settings_for(tmp_path, stacks=stacks)


def file_facts(sample: SampleKey, path: Path) -> KeyFacts:
    return KeyFacts(sample.public_key, KeySource("key-file", f"key file {path}", path))


# -- file mode and owner -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        (0o600, Status.PASS),
        (0o400, Status.PASS),
        (0o640, Status.FAIL),
        (0o604, Status.FAIL),
        (0o620, Status.WARN),
    ],
)
def test_file_mode(tmp_path: Path, mode: int, status: Status) -> None:
    sample = new_key()
    path = write_private(tmp_path / "key", sample.hex, mode)
    result = check_file_mode(file_facts(sample, path))
    assert result.status is status, result.detail
    if status is Status.FAIL:
        assert result.remediation == f"chmod 600 {path}"


def test_key_from_the_environment_has_no_file_to_check() -> None:
    facts = KeyFacts(new_key().public_key, KeySource("environment", "SIGNER_SIGNER__PRIVATE_KEY"))
    assert check_file_mode(facts).status is Status.SKIP
    assert check_owner(facts, KeySettings()).status is Status.SKIP


def test_owner(tmp_path: Path) -> None:
    sample = new_key()
    path = write_private(tmp_path / "key", sample.hex)
    facts = file_facts(sample, path)
    assert check_owner(facts, KeySettings()).status is Status.PASS
    assert check_owner(facts, KeySettings(expected_owner="root")).status is Status.PASS
    wrong = check_owner(facts, KeySettings(expected_owner="nobody"))
    assert wrong.status is Status.FAIL and "not nobody" in wrong.detail


def test_key_options_are_validated_when_settings_load(tmp_path: Path) -> None:
    assert settings_for(tmp_path, key={"backup_max_age_days": 30}).key.backup_max_age_days == 30
    # A typo under [key] stops every command, not only the key commands.
    with pytest.raises(ConfigError, match=r"key\.backup_max_age_dayz: unknown setting"):
        settings_for(tmp_path, key={"backup_max_age_dayz": 30})


# -- which key it is ---------------------------------------------------------------------------


def test_bootstrap_set(tmp_path: Path) -> None:
    sample, other = new_key(), new_key()
    facts = KeyFacts(sample.public_key, KeySource("fd", "fd 3"))
    inside = settings_for(
        tmp_path, signer={"bootstrap_signing_set": [other.public_key, sample.public_key.upper()]}
    )
    outside = settings_for(tmp_path, signer={"bootstrap_signing_set": [other.public_key]})
    assert check_bootstrap_set(facts, inside).status is Status.PASS
    assert check_bootstrap_set(facts, outside).status is Status.FAIL
    assert check_bootstrap_set(facts, settings_for(tmp_path)).status is Status.WARN


def test_well_known_key_fails() -> None:
    devenv_signer_2 = "031a4d9f4903da97498945a4e01a5023a1d53bc96ad670bfe03adf8a06c52e6380"
    result = check_not_well_known(KeyFacts(devenv_signer_2, KeySource("fd", "fd 3")))
    assert result.status is Status.FAIL and "sbtc-signer-2" in result.detail
    assert (
        check_not_well_known(KeyFacts(new_key().public_key, KeySource("fd", "fd 3"))).status
        is Status.PASS
    )


def test_onchain_signer_set_membership(tmp_path: Path) -> None:
    sample, other = new_key(), new_key()
    facts = KeyFacts(sample.public_key, KeySource("fd", "fd 3"))
    with FakeStacksNode() as node:
        settings = node_settings(tmp_path, node.url)
        reader = lambda: read_onchain_signer_set(settings)  # noqa: E731
        assert check_onchain_set(facts, reader).status is Status.WARN  # registry not set yet
        node.set_signer_data(other.public_bytes, [other.public_bytes, sample.public_bytes], 2)
        result = check_onchain_set(facts, reader)
        assert result.status is Status.PASS, result.detail
        node.set_signer_data(other.public_bytes, [other.public_bytes], 1)
        result = check_onchain_set(facts, reader)
        assert (
            result.status is Status.FAIL
            and "not in the current on-chain signer set" in result.detail
        )
        assert node.requests_for("get-current-signer-data")
    assert check_onchain_set(facts, None).status is Status.SKIP


def test_onchain_endpoints_that_disagree_or_fail(tmp_path: Path) -> None:
    sample, other = new_key(), new_key()
    facts = KeyFacts(sample.public_key, KeySource("fd", "fd 3"))
    with FakeStacksNode() as first, FakeStacksNode() as second:
        first.set_signer_data(other.public_bytes, [sample.public_bytes, other.public_bytes], 2)
        second.set_signer_data(other.public_bytes, [other.public_bytes], 1)
        both = node_settings(tmp_path, first.url, second.url)
        result = check_onchain_set(facts, lambda: read_onchain_signer_set(both))
        assert result.status is Status.WARN and "disagree" in result.detail
        dead_url = second.url
    dead = node_settings(tmp_path, dead_url)
    result = check_onchain_set(facts, lambda: read_onchain_signer_set(dead))
    assert result.status is Status.ERROR and dead_url in result.detail


# -- the cold backup record ------------------------------------------------------------------


def test_cold_backup_age(tmp_path: Path) -> None:
    sample = new_key()
    facts = KeyFacts(sample.public_key, KeySource("fd", "fd 3"))
    now = time.time()
    with StateStore.open(tmp_path / "state") as store:
        never = check_cold_backup(facts, store, KeySettings(), now)
        assert never.status is Status.WARN and "no verified cold backup" in never.detail
        store.record_event(
            EventKind.KEY_BACKUP_VERIFY, new_key().public_key, "ok", at=now
        )  # another key
        assert check_cold_backup(facts, store, KeySettings(), now).status is Status.WARN
        store.record_event(EventKind.KEY_BACKUP_VERIFY, sample.public_key, "ok", at=now - 100 * DAY)
        old = check_cold_backup(facts, store, KeySettings(), now)
        assert old.status is Status.WARN and "100 days ago" in old.detail
        assert (
            check_cold_backup(facts, store, KeySettings(backup_max_age_days=120), now).status
            is Status.PASS
        )
        store.record_event(EventKind.KEY_BACKUP_VERIFY, sample.public_key, "ok", at=now - 10 * DAY)
        recent = check_cold_backup(facts, store, KeySettings(), now)
        assert recent.status is Status.PASS and recent.data["age_days"] == 10.0
        store.record_event(
            EventKind.KEY_BACKUP_VERIFY, sample.public_key, "wrong-passphrase", at=now - DAY
        )
        assert check_cold_backup(facts, store, KeySettings(), now).status is Status.PASS
        store.record_event(EventKind.KEY_BACKUP_VERIFY, sample.public_key, "mismatch", at=now)
        assert check_cold_backup(facts, store, KeySettings(), now).status is Status.FAIL


# -- all together ------------------------------------------------------------------------------


def test_check_key_from_the_signer_config(tmp_path: Path) -> None:
    sample, other = new_key(), new_key()
    with FakeStacksNode() as node:
        node.set_signer_data(other.public_bytes, [other.public_bytes], 1)
        config = signer_config(
            tmp_path / "signer-config.toml",
            sample,
            bootstrap=[sample.public_key, other.public_key],
            endpoints=[node.url],
        )
        settings = settings_for(
            tmp_path,
            signer={"config_path": str(config)},
            stacks={"retries": 0, "timeout_s": 3},
        )
        report = check_key(settings)
    by_id = {result.id: result.status for result in report.results}
    assert report.public_key == sample.public_key
    assert by_id["key.file_mode"] is Status.PASS
    assert by_id["key.in_bootstrap_set"] is Status.PASS
    assert by_id["key.in_onchain_signer_set"] is Status.FAIL
    assert not report.ok
