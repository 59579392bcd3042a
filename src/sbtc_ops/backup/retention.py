"""Grandfather-father-son retention, as a pure function of backup ids.

For each rule (daily, weekly, monthly) the newest backup of each period is kept, for the
newest N periods that have a backup — borg's and restic's semantics. The newest complete
backup is always kept, whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sbtc_ops.backup.ids import backup_time

Period = Callable[[datetime], tuple[int, ...]]


def _day(moment: datetime) -> tuple[int, ...]:
    return (moment.year, moment.month, moment.day)


def _week(moment: datetime) -> tuple[int, ...]:
    iso = moment.isocalendar()
    return (iso.year, iso.week)


def _month(moment: datetime) -> tuple[int, ...]:
    return (moment.year, moment.month)


@dataclass(frozen=True)
class RetentionPolicy:
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12


@dataclass(frozen=True)
class RetentionPlan:
    keep: dict[str, list[str]]  # id → reasons ("newest", "daily", "weekly", "monthly")
    delete: list[str]


def plan_retention(complete_ids: Iterable[str], policy: RetentionPolicy) -> RetentionPlan:
    ordered = sorted(set(complete_ids), key=backup_time, reverse=True)
    reasons: dict[str, list[str]] = {}
    if ordered:
        reasons[ordered[0]] = ["newest"]
    rules: tuple[tuple[str, Period, int], ...] = (
        ("daily", _day, policy.keep_daily),
        ("weekly", _week, policy.keep_weekly),
        ("monthly", _month, policy.keep_monthly),
    )
    for name, period, count in rules:
        seen: set[tuple[int, ...]] = set()
        for backup_id in ordered:
            if len(seen) >= count:
                break
            key = period(backup_time(backup_id))
            if key in seen:
                continue
            seen.add(key)
            reasons.setdefault(backup_id, []).append(name)
    delete = [backup_id for backup_id in ordered if backup_id not in reasons]
    return RetentionPlan(keep=reasons, delete=sorted(delete))
