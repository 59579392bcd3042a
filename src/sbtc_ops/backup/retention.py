"""Grandfather-father-son retention, as a pure function of backup ids.

For each rule (daily, weekly, monthly) one backup of each period is kept, for the newest N
periods that have a backup — borg's and restic's semantics — except that within a period the
newest *verified* backup (a restore drill proved it) is preferred to newer unverified ones.
Whatever the rules say, these are always kept: the newest complete backup, the newest
verified one, and any backup the caller protects (e.g. the newest holding the shares of the
current on-chain aggregate key). Every decision carries its reasons, for `prune --dry-run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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


RULE_UNITS = {"daily": "day", "weekly": "ISO week", "monthly": "month"}
NEWEST = "newest"
NEWEST_VERIFIED = "newest verified-ok"


@dataclass(frozen=True)
class RetentionPlan:
    # id → reasons: "newest", "newest verified-ok", "daily", "weekly", "monthly", or a
    # protection given by the caller.
    keep: dict[str, list[str]]
    delete: list[str]
    why_deleted: dict[str, str] = field(default_factory=dict)  # id → one sentence


def plan_retention(
    complete_ids: Iterable[str],
    policy: RetentionPolicy,
    *,
    verified: Iterable[str] = (),
    protected: Mapping[str, str] | None = None,
) -> RetentionPlan:
    """`verified`: ids a restore drill proved good; `protected`: id → why it must stay."""
    ordered = sorted(set(complete_ids), key=backup_time, reverse=True)
    proven = set(verified)
    reasons: dict[str, list[str]] = {}
    if ordered:
        reasons[ordered[0]] = [NEWEST]
    slot_holder: dict[tuple[str, tuple[int, ...]], str] = {}
    for name, period, count in _rules(policy):
        for key, members in _newest_periods(ordered, period, count):
            chosen = next((i for i in members if i in proven), members[0])
            slot_holder[(name, key)] = chosen
            reasons.setdefault(chosen, []).append(name)
    newest_proven = next((i for i in ordered if i in proven), None)
    if newest_proven is not None:
        reasons.setdefault(newest_proven, []).append(NEWEST_VERIFIED)
    present = set(ordered)
    for backup_id, why in (protected or {}).items():
        if backup_id in present:
            reasons.setdefault(backup_id, []).append(why)
    delete = [backup_id for backup_id in ordered if backup_id not in reasons]
    explained = {i: _why_deleted(i, policy, slot_holder, proven) for i in delete}
    return RetentionPlan(keep=reasons, delete=sorted(delete), why_deleted=explained)


def _rules(policy: RetentionPolicy) -> tuple[tuple[str, Period, int], ...]:
    return (
        ("daily", _day, policy.keep_daily),
        ("weekly", _week, policy.keep_weekly),
        ("monthly", _month, policy.keep_monthly),
    )


def _newest_periods(
    ordered: list[str], period: Period, count: int
) -> list[tuple[tuple[int, ...], list[str]]]:
    """The newest `count` periods that have a backup, each with its backups, newest first."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for backup_id in ordered:
        key = period(backup_time(backup_id))
        if key not in groups and len(groups) >= count:
            break
        groups.setdefault(key, []).append(backup_id)
    return list(groups.items())


def _why_deleted(
    backup_id: str,
    policy: RetentionPolicy,
    slot_holder: dict[tuple[str, tuple[int, ...]], str],
    proven: set[str],
) -> str:
    moment = backup_time(backup_id)
    for name, period, _count in _rules(policy):
        holder = slot_holder.get((name, period(moment)))
        if holder is not None:
            kind = "a verified-ok backup" if holder in proven else "a newer backup"
            return f"its {RULE_UNITS[name]} is kept by {kind}, {holder}"
    return (
        f"older than the slots kept ({policy.keep_daily} daily, {policy.keep_weekly} weekly, "
        f"{policy.keep_monthly} monthly), not verified-ok, not protected"
        if backup_id not in proven
        else f"older than the slots kept ({policy.keep_daily} daily, {policy.keep_weekly} "
        f"weekly, {policy.keep_monthly} monthly) and a newer backup is verified-ok"
    )
