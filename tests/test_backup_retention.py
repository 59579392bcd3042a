"""Retention: grandfather-father-son over backup ids, pure and through `sbtc-ops prune`."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbtc_ops.backup import inuse
from sbtc_ops.backup.ids import backup_time, new_backup_id
from sbtc_ops.backup.manifest import MANIFEST_NAME, DkgKeyInfo
from sbtc_ops.backup.retention import RetentionPolicy, plan_retention
from sbtc_ops.state import StateStore
from tests.support.backup import fake_manifest, write_fake_backups
from tests.support.cli import CliResult

Cli = Callable[..., CliResult]


def ids_for_days(first: date, last: date, hour: int = 3) -> list[str]:
    days = (last - first).days + 1
    return [
        new_backup_id(datetime(first.year, first.month, first.day, hour, tzinfo=UTC) + timedelta(d))
        for d in range(days)
    ]


def bid(day: date, hour: int = 3) -> str:
    return new_backup_id(datetime(day.year, day.month, day.day, hour, tzinfo=UTC))


# A year of daily backups, 2025-01-01 … 2025-12-31 at 03:00, under the defaults (7/4/12).
YEAR = ids_for_days(date(2025, 1, 1), date(2025, 12, 31))
EXPECTED_DAILY = {bid(date(2025, 12, d)) for d in range(25, 32)}
# 2025-12-31 is a Wednesday of ISO week 2026-W01 (which starts Monday 2025-12-29); the three
# weeks before end on Sundays 28, 21 and 14 December.
EXPECTED_WEEKLY = {bid(date(2025, 12, d)) for d in (31, 28, 21, 14)}
MONTH_ENDS = [date(2025, m + 1, 1) - timedelta(days=1) for m in range(1, 12)] + [date(2025, 12, 31)]
EXPECTED_MONTHLY = {bid(day) for day in MONTH_ENDS}
EXPECTED_YEAR_KEPT = EXPECTED_DAILY | EXPECTED_WEEKLY | EXPECTED_MONTHLY


def test_a_year_of_daily_backups_keeps_exactly_the_gfs_set() -> None:
    plan = plan_retention(YEAR, RetentionPolicy())
    assert set(plan.keep) == EXPECTED_YEAR_KEPT
    # 7 days; weeks add 21 and 14 December (31 and 28 are already kept); months add 11 ends
    assert len(EXPECTED_YEAR_KEPT) == 7 + 2 + 11
    assert set(plan.delete) == set(YEAR) - EXPECTED_YEAR_KEPT
    assert plan.keep[bid(date(2025, 12, 31))] == ["newest", "daily", "weekly", "monthly"]
    assert plan.keep[bid(date(2025, 12, 14))] == ["weekly"]
    assert plan.keep[bid(date(2025, 1, 31))] == ["monthly"]


def test_several_backups_a_day_keep_the_newest_of_each_day() -> None:
    ids = [
        bid(date(2025, 3, day), hour)
        for day in range(1, 11)  # 1 … 10 March
        for hour in (1, 9, 17)
    ]
    plan = plan_retention(ids, RetentionPolicy(keep_daily=3, keep_weekly=0, keep_monthly=0))
    assert set(plan.keep) == {bid(date(2025, 3, d), 17) for d in (8, 9, 10)}


def test_periods_without_a_backup_do_not_use_up_the_count() -> None:
    # Backups only on the 1st and 15th: the 3 daily slots go to the 3 newest such days.
    ids = [bid(date(2025, m, d)) for m in (1, 2, 3) for d in (1, 15)]
    plan = plan_retention(ids, RetentionPolicy(keep_daily=3, keep_weekly=0, keep_monthly=0))
    assert set(plan.keep) == {bid(date(2025, 3, 15)), bid(date(2025, 3, 1)), bid(date(2025, 2, 15))}


def test_the_newest_backup_is_kept_whatever_the_policy() -> None:
    plan = plan_retention(YEAR, RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0))
    assert list(plan.keep) == [YEAR[-1]]
    assert len(plan.delete) == len(YEAR) - 1


def test_suffixed_ids_sort_by_their_time() -> None:
    ids = ["20250102T030000Z-dkg", "20250101T030000Z", "20250103T030000Z"]
    plan = plan_retention(ids, RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0))
    assert list(plan.keep) == ["20250103T030000Z"]


def test_no_backups_no_plan() -> None:
    plan = plan_retention([], RetentionPolicy())
    assert plan.keep == {} and plan.delete == []


EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
moments = st.integers(0, 10 * 366 * 86400).map(
    lambda seconds: new_backup_id(EPOCH + timedelta(seconds=seconds))
)


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(moments, max_size=60),
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 14),
)
def test_plan_partitions_the_ids_and_never_drops_the_newest(
    ids: list[str], daily: int, weekly: int, monthly: int
) -> None:
    plan = plan_retention(ids, RetentionPolicy(daily, weekly, monthly))
    assert set(plan.keep) | set(plan.delete) == set(ids)
    assert not set(plan.keep) & set(plan.delete)
    if ids:
        assert max(ids) in plan.keep
        # each rule keeps at most its count, so the plan keeps at most their sum plus one
        assert len(plan.keep) <= 1 + daily + weekly + monthly
    # the plan depends on the set of ids only
    assert plan_retention(list(reversed(ids)), RetentionPolicy(daily, weekly, monthly)) == plan


# -- through the CLI ----------------------------------------------------------------------

INCOMPLETE = ["20251231T120000Z", "20250615T120000Z"]


def listing(root: Path) -> set[str]:
    return {path.name for path in root.iterdir()}


def test_prune_dry_run_deletes_nothing_and_says_what_it_would(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_fake_backups(repo, YEAR, INCOMPLETE)
    before = listing(repo)

    result = cli("prune", "--repo", str(repo), "--dry-run", "--json")

    assert result.code == 0, result.stderr
    assert listing(repo) == before
    (report,) = result.json()["locations"]
    assert result.json()["dry_run"] is True
    assert set(report["deleted"]) == set(YEAR) - EXPECTED_YEAR_KEPT
    assert set(report["kept"]) == EXPECTED_YEAR_KEPT
    assert sorted(report["incomplete_removed"]) == sorted(INCOMPLETE)


def test_prune_keeps_exactly_the_gfs_set_and_removes_incomplete(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_fake_backups(repo, YEAR, INCOMPLETE)

    result = cli("prune", "--repo", str(repo), "--json")

    assert result.code == 0, result.stderr
    assert listing(repo) == EXPECTED_YEAR_KEPT
    listed = cli("backups", "--repo", str(repo), "--json").json()["backups"]
    assert {row["id"] for row in listed} == EXPECTED_YEAR_KEPT
    assert {row["state"] for row in listed} == {"complete"}


def test_prune_never_deletes_the_newest_complete_backup(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    newest_complete = "20251230T030000Z"
    write_fake_backups(
        repo, ["20251201T030000Z", "20251215T030000Z", newest_complete], ["20251231T030000Z"]
    )
    zero = {
        "SBTC_OPS_BACKUP__RETENTION__KEEP_DAILY": "0",
        "SBTC_OPS_BACKUP__RETENTION__KEEP_WEEKLY": "0",
        "SBTC_OPS_BACKUP__RETENTION__KEEP_MONTHLY": "0",
    }

    result = cli("prune", "--repo", str(repo), "--json", env=zero)

    assert result.code == 0, result.stderr
    assert listing(repo) == {newest_complete}


def test_prune_works_on_the_locations_it_can_list_and_names_the_others(
    cli: Cli, tmp_path: Path
) -> None:
    good = tmp_path / "good"
    write_fake_backups(good, YEAR, INCOMPLETE)
    alone = tmp_path / "alone"
    write_fake_backups(alone, YEAR, INCOMPLETE)
    assert cli("prune", "--repo", str(alone), "--json").code == 0
    broken = tmp_path / "broken"
    broken.write_text("a file where a backup directory should be\n")

    result = cli("prune", "--repo", str(good), "--repo", str(broken), "--json")

    assert result.code == 1  # a problem found; the reachable location was still pruned
    assert listing(good) == listing(alone)
    doc = result.json()
    assert doc["ok"] is False
    pruned, failed = doc["locations"]
    assert pruned["location"] == str(good) and "error" not in pruned
    assert failed["location"] == str(broken) and failed["deleted"] == []
    assert f"backup location {broken} is not a directory" == failed["error"]
    assert f"error: backup location {broken} is not a directory; nothing was deleted there" in (
        " ".join(result.stderr.split())
    )


@pytest.mark.parametrize("command", ["backups", "prune"])
@pytest.mark.parametrize("json_flag", [True, False])
def test_a_location_that_does_not_exist_is_an_error_never_empty(
    cli: Cli, tmp_path: Path, command: str, json_flag: bool
) -> None:
    missing = tmp_path / "does-not-exist"
    result = cli(command, "--repo", str(missing), *(["--json"] if json_flag else []))
    assert result.code == 2
    assert f"backup location {missing} does not exist" in " ".join(result.stderr.split())
    assert "no backups found" not in result.stdout and "kept 0" not in result.stdout
    if json_flag:
        assert result.json()["ok"] is False
        assert str(missing) in result.json()["error"]
    assert not missing.exists()  # listing never creates it


def test_prune_leaves_incomplete_backups_alone_while_a_backup_runs(
    cli: Cli, tmp_path: Path, workdir: Path
) -> None:
    repo = tmp_path / "repo"
    write_fake_backups(repo, ["20251201T030000Z"], ["20251231T030000Z"])
    state = workdir / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    # The lock a running `sbtc-ops backup` holds.
    fd = os.open(state / "backup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("prune", "--repo", str(repo), "--json")
    finally:
        os.close(fd)

    assert result.code == 0, result.stderr
    assert listing(repo) == {"20251201T030000Z", "20251231T030000Z.partial"}
    assert result.json()["locations"][0]["incomplete_removed"] == []


def test_a_verify_that_could_not_run_does_not_mark_a_backup_failed(tmp_path: Path) -> None:
    from sbtc_ops.backup.service import backup_state
    from sbtc_ops.backup.storage import StoredBackup
    from sbtc_ops.state import StateStore

    backup = StoredBackup("20261124T010203Z", str(tmp_path), True, None, 1)
    with StateStore.open(tmp_path / "state") as store:
        assert backup_state(backup, store) == "complete"
        store.record_event("verify", backup.id, "error", at=1.0)
        assert backup_state(backup, store) == "complete"
        store.record_event("verify", backup.id, "ok", at=2.0)
        store.record_event("verify", backup.id, "error", at=3.0)
        assert backup_state(backup, store) == "verified-ok"
        store.record_event("verify", backup.id, "mismatch", at=4.0)
        assert backup_state(backup, store) == "verified-failed"


# -- what retention protects: verified backups, the on-chain key's shares, backups in use ---------


def test_within_a_slot_a_verified_backup_is_preferred_to_newer_unverified_ones() -> None:
    ids = [bid(date(2025, 3, day), hour) for day in (1, 2, 3) for hour in (1, 9, 17)]
    verified = {bid(date(2025, 3, 2), 1)}
    plan = plan_retention(
        ids, RetentionPolicy(keep_daily=3, keep_weekly=0, keep_monthly=0), verified=verified
    )
    newest = bid(date(2025, 3, 3), 17)
    assert set(plan.keep) == {newest, bid(date(2025, 3, 2), 1), bid(date(2025, 3, 1), 17)}
    assert plan.keep[bid(date(2025, 3, 2), 1)] == ["daily", "newest verified-ok"]
    # The newer unverified backups of that day go, and say which backup holds their day.
    assert plan.why_deleted[bid(date(2025, 3, 2), 17)] == (
        f"its day is kept by a verified-ok backup, {bid(date(2025, 3, 2), 1)}"
    )
    assert (
        plan.why_deleted[bid(date(2025, 3, 3), 9)] == f"its day is kept by a newer backup, {newest}"
    )


def test_the_newest_verified_and_protected_backups_survive_any_policy() -> None:
    verified = {bid(date(2025, 1, 1)), bid(date(2025, 6, 1))}
    holder = bid(date(2025, 2, 1))
    plan = plan_retention(
        YEAR,
        RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0),
        verified=verified,
        protected={holder: "holds the on-chain key"},
    )
    assert plan.keep == {
        YEAR[-1]: ["newest"],
        bid(date(2025, 6, 1)): ["newest verified-ok"],
        holder: ["holds the on-chain key"],
    }
    assert "a newer backup is verified-ok" in plan.why_deleted[bid(date(2025, 1, 1))]
    assert set(plan.why_deleted) == set(plan.delete)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(moments, min_size=1, max_size=40), data=st.data())
def test_every_decision_is_explained_and_verified_never_all_lost(
    ids: list[str], data: st.DataObject
) -> None:
    verified = data.draw(st.sets(st.sampled_from(ids)))
    plan = plan_retention(ids, RetentionPolicy(2, 1, 1), verified=verified)
    assert set(plan.why_deleted) == set(plan.delete)
    assert all(plan.keep[i] for i in plan.keep)
    if verified:
        assert max(verified, key=backup_time) in plan.keep


def _rewrite_manifest(repo: Path, backup_id: str, dkg_keys: list[str]) -> None:
    manifest = fake_manifest(backup_id)
    manifest.dkg_keys = [
        DkgKeyInfo(aggregate_key=key, status="verified", created_at="2025-01-01T00:00:00+00:00")
        for key in dkg_keys
    ]
    (repo / backup_id / MANIFEST_NAME).write_bytes(manifest.to_bytes())


CHAIN_KEY = "02" + "ab" * 32
OLD_KEY = "03" + "cd" * 32
SAME_DAY = [bid(date(2025, 12, 31), hour) for hour in (1, 9, 17)]
OLDER = [bid(date(2025, 11, 20)), bid(date(2025, 12, 10))]
ONE_DAILY = {
    "SBTC_OPS_BACKUP__RETENTION__KEEP_DAILY": "1",
    "SBTC_OPS_BACKUP__RETENTION__KEEP_WEEKLY": "0",
    "SBTC_OPS_BACKUP__RETENTION__KEEP_MONTHLY": "0",
}


def _protected_repo(tmp_path: Path, workdir: Path) -> Path:
    """Three backups today (only the first verified), two older ones, of which the oldest
    is the newest backup holding the current on-chain key's shares (the rotation to
    OLD_KEY on 10 December was never confirmed on chain)."""
    repo = tmp_path / "repo"
    write_fake_backups(repo, [*OLDER, *SAME_DAY])
    _rewrite_manifest(repo, OLDER[0], [CHAIN_KEY])
    _rewrite_manifest(repo, OLDER[1], [OLD_KEY])
    with StateStore.open(workdir / "state") as store:
        store.record_event("verify", SAME_DAY[0], "ok")
        store.record_event("chain-key", CHAIN_KEY, "seen")
    return repo


def test_prune_keeps_the_only_verified_backup_and_the_current_key_and_explains(
    cli: Cli, tmp_path: Path, workdir: Path
) -> None:
    repo = _protected_repo(tmp_path, workdir)

    dry = cli("prune", "--repo", str(repo), "--dry-run", "--json", env=ONE_DAILY)

    assert dry.code == 0, dry.stderr
    (report,) = dry.json()["locations"]
    decisions = {row["id"]: (row["action"], row["reasons"]) for row in report["decisions"]}
    assert decisions == {
        SAME_DAY[2]: ("keep", ["newest"]),
        SAME_DAY[1]: ("delete", [f"its day is kept by a verified-ok backup, {SAME_DAY[0]}"]),
        SAME_DAY[0]: ("keep", ["daily", "newest verified-ok"]),
        OLDER[1]: ("delete", [older_reason()]),
        OLDER[0]: ("keep", [f"newest holding the on-chain key's shares ({CHAIN_KEY})"]),
    }
    text = cli("prune", "--repo", str(repo), "--dry-run", env=ONE_DAILY)
    assert f"would delete {SAME_DAY[1]}" in " ".join(text.stdout.split())
    assert "newest verified-ok" in text.stdout

    pruned = cli("prune", "--repo", str(repo), "--json", env=ONE_DAILY)

    assert pruned.code == 0, pruned.stderr
    assert listing(repo) == {SAME_DAY[2], SAME_DAY[0], OLDER[0]}


def older_reason() -> str:
    return (
        "older than the slots kept (1 daily, 0 weekly, 0 monthly), not verified-ok, not protected"
    )


def test_prune_skips_a_backup_being_verified_and_deletes_it_next_time(
    cli: Cli, tmp_path: Path, workdir: Path
) -> None:
    repo = tmp_path / "repo"
    old, new = bid(date(2025, 12, 1)), bid(date(2025, 12, 31))
    write_fake_backups(repo, [old, new])
    zero = {**ONE_DAILY, "SBTC_OPS_BACKUP__RETENTION__KEEP_DAILY": "0"}
    # What a verify or restore of `old` holds while it reads it (another process's lock:
    # flock locks of separate open files conflict within one process too).
    with inuse.reading(workdir / "state", str(repo), old):
        dry = cli("prune", "--repo", str(repo), "--dry-run", "--json", env=zero)
        busy = cli("prune", "--repo", str(repo), "--json", env=zero)
        text = cli("prune", "--repo", str(repo), env=zero)
    assert dry.json()["locations"][0]["skipped_in_use"] == [old]
    assert busy.code == 0, busy.stderr
    (report,) = busy.json()["locations"]
    assert report["skipped_in_use"] == [old] and report["deleted"] == []
    assert report["kept"][old] == ["in use by a running verify or restore"]
    assert f"note: {old} is in use" in text.stdout
    assert listing(repo) == {old, new}

    after = cli("prune", "--repo", str(repo), "--json", env=zero)

    assert after.json()["locations"][0]["deleted"] == [old]
    assert listing(repo) == {new}
