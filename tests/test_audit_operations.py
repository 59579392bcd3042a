"""audit operations: roster (administrators, hardware keys, hours coverage) and runbooks."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.audit.areas.operations import parse_hours
from tests.support.audit2 import NOW, make_settings, run_area, statuses, write

FIXTURE = Path(__file__).parent / "fixtures" / "audit2" / "operations"
ROSTER = "/etc/sbtc-ops/roster.toml"
RUNBOOKS = ["/etc/sbtc-ops/runbooks/restore.md", "/etc/sbtc-ops/runbooks/key-recovery.md"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    return root


def settings(tmp_path: Path, **audit: Any) -> Any:
    doc: dict[str, Any] = {"roster_file": ROSTER, "runbooks": RUNBOOKS}
    doc.update(audit)
    return make_settings(tmp_path, audit=doc)


def admin(name: str, zone: str, hours: str, key: bool = True, contact: str = "x@y") -> str:
    return (
        f'[[administrator]]\nname = "{name}"\ntimezone = "{zone}"\n'
        f'working_hours = "{hours}"\ncontact = "{contact}"\nhardware_key = {str(key).lower()}\n'
    )


def test_three_time_zones_cover_weekdays(tmp_path: Path, tree: Path) -> None:
    findings = run_area("operations", settings(tmp_path, coverage_min_percent=60), root=tree)
    assert statuses(findings) == {
        "OPS-001": "pass",
        "OPS-002": "pass",
        "OPS-003": "pass",
        "OPS-004": "warn",  # key-recovery.md reviewed 358 days ago
    }
    # Zurich 08-17 CET = 07-16 UTC, New York 09-18 EST = 14-23 UTC, Tokyo 09-18 JST = 00-09
    # UTC: weekdays 00:00-23:00 UTC covered, 23 h × 5 = 115 h
    assert findings["OPS-003"].data["percent"] == round(100 * 115 / 168, 1)
    assert "key-recovery.md (reviewed 358 days ago)" in findings["OPS-004"].detail

    findings = run_area("operations", settings(tmp_path), root=tree)  # default minimum 70%
    assert statuses(findings)["OPS-003"] == "warn"
    assert "Fri 23:00–Mon 00:00" in findings["OPS-003"].detail


def test_single_admin_without_hardware_key(tmp_path: Path) -> None:
    write(tmp_path, ROSTER, admin("Solo", "UTC", "daily 00:00-24:00", key=False, contact=""))
    findings = run_area("operations", settings(tmp_path, runbooks=[]), root=tmp_path)
    assert statuses(findings) == {
        "OPS-001": "fail",
        "OPS-002": "fail",
        "OPS-003": "pass",  # one person "covering" 24/7 is OPS-001's problem
        "OPS-004": "warn",
    }
    assert findings["OPS-002"].detail == "no hardware key enrolled: Solo; Solo: no contact"
    assert findings["OPS-003"].data["percent"] == 100.0


def test_bad_time_zone_and_hours_are_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        ROSTER,
        admin("A", "Mars/Olympus", "Mon-Fri 08:00-17:00")
        + admin("B", "UTC", "Weekdays 9-5")
        + admin("C", "UTC", "Mon-Fri 22:00-06:00"),
    )
    findings = run_area("operations", settings(tmp_path, runbooks=[]), root=tmp_path)
    assert statuses(findings)["OPS-002"] == "warn"
    detail = findings["OPS-002"].detail
    assert "A: time zone 'Mars/Olympus' is not an IANA name" in detail
    assert "B: working_hours: 'Weekdays 9-5' is not like" in detail
    # only C counts: 22:00-06:00 over five nights = 40 hours
    assert findings["OPS-003"].data["percent"] == round(100 * 40 / 168, 1)
    assert statuses(findings)["OPS-003"] == "warn"


def test_missing_and_stale_runbooks(tmp_path: Path, tree: Path) -> None:
    plain = write(tree, "/etc/sbtc-ops/runbooks/upgrade.md", "# Upgrade\nno review line\n")
    old = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    os.utime(plain, (old, old))
    runbooks = [*RUNBOOKS, "/etc/sbtc-ops/runbooks/upgrade.md", "/etc/sbtc-ops/runbooks/dkg.md"]
    findings = run_area("operations", settings(tmp_path, runbooks=runbooks), root=tree)
    assert statuses(findings)["OPS-004"] == "fail"
    assert findings["OPS-004"].data["missing"] == ["/etc/sbtc-ops/runbooks/dkg.md"]
    assert "upgrade.md (modified 327 days ago)" in findings["OPS-004"].detail
    findings = run_area(
        "operations", settings(tmp_path, runbooks=RUNBOOKS, runbook_max_age_days=400), root=tree
    )
    assert statuses(findings)["OPS-004"] == "pass"


def test_former_administrators_do_not_count(tmp_path: Path) -> None:
    write(
        tmp_path,
        ROSTER,
        admin("alice", "UTC", "Mon-Fri 08:00-17:00")
        + admin("bob", "UTC", "Mon-Fri 08:00-17:00")
        + "removed = 2026-02-01\n"
        + '[[former_administrator]]\nname = "carol"\nremoved = 2025-01-01\n',
    )
    findings = run_area("operations", settings(tmp_path, runbooks=[]), root=tmp_path)
    assert statuses(findings)["OPS-001"] == "fail"
    assert findings["OPS-001"].detail == "1 administrator(s) on the roster: alice"


def test_removed_date_written_as_a_string_counts_too(tmp_path: Path) -> None:
    """The secrets inventory accepts "YYYY-MM-DD" strings; the roster check agrees."""
    write(
        tmp_path,
        ROSTER,
        admin("alice", "UTC", "Mon-Fri 08:00-17:00")
        + admin("bob", "UTC", "Mon-Fri 08:00-17:00")
        + 'removed = "2026-02-01"\n',
    )
    findings = run_area("operations", settings(tmp_path, runbooks=[]), root=tmp_path)
    assert findings["OPS-001"].detail == "1 administrator(s) on the roster: alice"


def test_no_roster_and_broken_roster(tmp_path: Path) -> None:
    findings = run_area("operations", make_settings(tmp_path), root=tmp_path)
    assert statuses(findings) == {
        "OPS-001": "warn",
        "OPS-002": "skip",
        "OPS-003": "skip",
        "OPS-004": "warn",
    }
    write(tmp_path, ROSTER, "[[administrator]\nname = ")
    findings = run_area("operations", settings(tmp_path), root=tmp_path)
    assert statuses(findings)["OPS-001"] == "error"
    assert "not valid TOML" in findings["OPS-001"].detail


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Mon-Fri 08:00-17:00", 5),
        ("Fri-Mon 08:00-17:00", 4),
        ("Mon,Wed,Sun 08:00-17:00", 3),
        ("daily 00:00-24:00", 7),
    ],
)
def test_hours_grammar(text: str, count: int) -> None:
    assert len(parse_hours(text)) == count


def test_now_is_a_tuesday() -> None:
    assert NOW.weekday() == 1  # the coverage week of these tests starts Mon 2026-11-23


def test_every_check_of_these_areas_is_documented() -> None:
    from sbtc_ops.audit.framework import select_checks

    docs = (Path(__file__).parent.parent / "docs" / "audit-checks.md").read_text()
    areas = ["logs", "monitoring", "nodes", "releases", "operations"]
    ids = [c.id for c in select_checks(areas)]
    assert len(ids) == 35
    assert [i for i in ids if f"| {i} |" not in docs] == []
