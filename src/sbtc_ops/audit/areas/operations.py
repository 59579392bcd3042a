"""Operations: redundancy of the people and procedures behind the signer.

Evidence: the administrator roster (``audit.roster_file``, TOML) and the runbooks listed in
``audit.runbooks``. A roster looks like::

    [[administrator]]
    name = "Alice"
    timezone = "Europe/Zurich"            # IANA name
    working_hours = ["Mon-Fri 08:00-17:00", "Sat 10:00-12:00"]
    contact = "alice@example.org / +41 …"
    hardware_key = true                   # FIDO key enrolled for SSH and cloud consoles
    # removed = 2026-02-01                # from that day on, a former administrator

``[[former_administrator]]`` tables (the secrets audit reads them) are not counted.

Hours ranges may wrap past midnight (``Mon-Fri 22:00-06:00``); days are Mon…Sun, ranges
(``Mon-Fri``), lists (``Mon,Wed``) or ``daily``. Coverage is counted over the 168 hours of the
current week in UTC (so daylight-saving shifts are those of this week).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sbtc_ops.audit.framework import (
    EvidenceError,
    HostContext,
    Outcome,
    Severity,
    check,
    failed,
    passed,
    skip_unless,
    warned,
)
from sbtc_ops.audit.inventory import parse_roster_date, roster_document

AREA = "operations"
SECTION = "Redundancy in operations"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS_PER_WEEK = 168
MIN_ADMINISTRATORS = 2
_RANGE = re.compile(
    r"^\s*(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
_REVIEWED = re.compile(r"(?im)^\W*(?:last[ _-]?)?reviewed(?:[ _-]on)?\W*[:=]\s*(\d{4}-\d{2}-\d{2})")


@dataclass
class Administrator:
    name: str
    timezone: ZoneInfo | None
    hours: list[tuple[int, time, time]]  # (weekday, start, end); end <= start wraps midnight
    contact: str
    hardware_key: bool
    problems: list[str] = field(default_factory=list)

    def on_duty(self, moment: datetime) -> bool:
        if self.timezone is None:
            return False
        local = moment.astimezone(self.timezone)
        clock = local.time()
        for weekday, start, end in self.hours:
            if start < end:
                if local.weekday() == weekday and start <= clock < end:
                    return True
            elif (local.weekday() == weekday and clock >= start) or (
                local.weekday() == (weekday + 1) % 7 and clock < end
            ):
                return True
        return False


def _days(text: str) -> list[int]:
    text = text.lower()
    if text in ("daily", "everyday", "all"):
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first[:3] not in DAYS or (last and last[:3] not in DAYS):
            raise ValueError(f"unknown day in {part!r}")
        start = DAYS.index(first[:3])
        stop = DAYS.index(last[:3]) if last else start
        days += [(start + i) % 7 for i in range((stop - start) % 7 + 1)]
    return days


def _clock(text: str) -> time:
    hours, minutes = (int(n) for n in text.split(":"))
    if hours == 24 and minutes == 0:
        return time(0, 0)
    return time(hours, minutes)


def parse_hours(value: Any) -> list[tuple[int, time, time]]:
    items = [value] if isinstance(value, str) else list(value or [])
    hours = []
    for item in items:
        match = _RANGE.match(str(item))
        if match is None:
            raise ValueError(f"{item!r} is not like 'Mon-Fri 08:00-17:00'")
        start, end = _clock(match["start"]), _clock(match["end"])
        hours += [(day, start, end) for day in _days(match["days"])]
    return hours


def _administrator(entry: dict[str, Any], index: int) -> Administrator:
    name = str(entry.get("name") or f"administrator #{index + 1}")
    problems = []
    zone: ZoneInfo | None = None
    try:
        zone = ZoneInfo(str(entry.get("timezone") or entry.get("time_zone") or ""))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"time zone {entry.get('timezone')!r} is not an IANA name")
    try:
        hours = parse_hours(entry.get("working_hours"))
    except ValueError as exc:
        hours = []
        problems.append(f"working_hours: {exc}")
    if not hours and not problems:
        problems.append("no working_hours")
    return Administrator(
        name,
        zone,
        hours,
        str(entry.get("contact") or "").strip(),
        entry.get("hardware_key") is True,
        problems,
    )


def roster(ctx: HostContext) -> list[Administrator]:
    def load() -> list[Administrator]:
        document = roster_document(ctx)
        entries = document.get("administrator", document.get("administrators", []))
        if not isinstance(entries, list):
            path = ctx.settings.audit.roster_file
            raise EvidenceError(f"{path}: [[administrator]] must be an array of tables")
        today = ctx.now.date()
        current = [
            e for e in entries if isinstance(e, dict) and not _removed_by(e.get("removed"), today)
        ]
        return [_administrator(e, i) for i, e in enumerate(current)]

    return ctx.memo("operations.roster", load)


def _removed_by(value: Any, today: date) -> bool:
    """An entry with `removed = <date>` on or before today is a former administrator; the
    date may be a TOML date or a "YYYY-MM-DD" string, as the secrets inventory reads it."""
    removed = parse_roster_date(value)
    return removed is not None and removed <= today


@check(
    "OPS-001",
    area=AREA,
    title="At least two administrators on the roster",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The page asks for redundancy in operations: a single administrator is a single "
    "point of failure for incidents, upgrades, DKG rounds and key recovery.",
    remediation="Name at least two trained administrators in the roster (audit.roster_file), "
    "each able to operate the signer alone.",
)
def two_administrators(ctx: HostContext) -> Outcome:
    if ctx.settings.audit.roster_file is None:
        return warned(
            "no administrator roster configured: redundancy cannot be verified",
            "Write the roster (see docs/audit-checks.md, OPS-001) and set audit.roster_file.",
        )
    admins = roster(ctx)
    names = [a.name for a in admins]
    if len(admins) < MIN_ADMINISTRATORS:
        return failed(f"{len(admins)} administrator(s) on the roster: {', '.join(names) or '-'}")
    return passed(f"{len(admins)} administrators: {', '.join(names)}", administrators=names)


@check(
    "OPS-002",
    area=AREA,
    title="Every administrator is reachable and uses a hardware key",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="An administrator without a contact cannot be called in an incident; one without "
    "an enrolled hardware key breaks the page's hardware-2FA rule; hours in an unknown time "
    "zone cannot be planned.",
    remediation="For each administrator record a contact, an IANA time zone, working hours, and "
    "enroll a FIDO hardware key (hardware_key = true once done).",
)
def administrators_complete(ctx: HostContext) -> Outcome:
    admins = skip_unless(roster(ctx), "the roster lists no administrator (see OPS-001)")
    no_key = [a.name for a in admins if not a.hardware_key]
    problems = [f"{a.name}: {p}" for a in admins for p in a.problems]
    problems += [f"{a.name}: no contact" for a in admins if not a.contact]
    if no_key:
        return failed(
            f"no hardware key enrolled: {', '.join(no_key)}"
            + (f"; {'; '.join(problems)}" if problems else ""),
            no_hardware_key=no_key,
        )
    if problems:
        return warned("; ".join(problems))
    return passed(f"all {len(admins)} administrators have contact, hours and a hardware key")


def week_coverage(admins: list[Administrator], now: datetime) -> list[bool]:
    """For each hour of this UTC week (Mon 00:00 first): is anyone on duty (at mid-hour)?"""
    today = now.astimezone(UTC).date()
    week_start = datetime.combine(today - timedelta(days=today.weekday()), time(0), UTC)
    return [
        any(a.on_duty(week_start + timedelta(hours=h, minutes=30)) for a in admins)
        for h in range(HOURS_PER_WEEK)
    ]


def _gaps(covered: list[bool]) -> list[str]:
    gaps: list[str] = []
    start: int | None = None
    for hour, on in enumerate([*covered, True]):
        if not on and start is None:
            start = hour
        elif on and start is not None:
            gaps.append(f"{_when(start)}–{_when(hour)}")
            start = None
    return gaps


def _when(hour: int) -> str:
    return f"{DAYS[(hour // 24) % 7].title()} {hour % 24:02d}:00"


@check(
    "OPS-003",
    area=AREA,
    title="Hours of the week covered by an administrator",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Signing rounds, DKG and incidents happen around the clock; administrators in "
    "different time zones keep someone able to act within hours.",
    remediation="Spread administrators across time zones or add on-call hours until coverage "
    "reaches audit.coverage_min_percent.",
)
def hours_covered(ctx: HostContext) -> Outcome:
    admins = skip_unless(
        [a for a in roster(ctx) if a.timezone is not None and a.hours],
        "no administrator with a time zone and working hours (see OPS-002)",
    )
    covered = week_coverage(admins, ctx.now)
    percent = 100 * sum(covered) / HOURS_PER_WEEK
    minimum = ctx.settings.audit.coverage_min_percent
    gaps = _gaps(covered)
    data: dict[str, Any] = {"percent": round(percent, 1), "minimum": minimum, "gaps_utc": gaps}
    text = f"{sum(covered)}/{HOURS_PER_WEEK} hours a week covered ({percent:.0f}%)"
    if percent < minimum:
        shown = "; ".join(gaps[:6]) + (" …" if len(gaps) > 6 else "")
        return warned(f"{text}, below {minimum:g}%; uncovered (UTC): {shown}", **data)
    return passed(text, **data)


@check(
    "OPS-004",
    area=AREA,
    title="Runbooks exist and were reviewed recently",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Documented procedures (restore, key recovery, upgrade, incident) let any "
    "administrator act alone; a runbook nobody reviewed drifts from the deployment.",
    remediation="List the runbooks in audit.runbooks; review each within "
    "audit.runbook_max_age_days and record it with a 'Last reviewed: YYYY-MM-DD' line.",
)
def runbooks_reviewed(ctx: HostContext) -> Outcome:
    paths = ctx.settings.audit.runbooks
    if not paths:
        return warned("no runbooks listed (audit.runbooks)")
    limit = ctx.settings.audit.runbook_max_age_days
    missing: list[str] = []
    stale: list[str] = []
    fresh: list[str] = []
    for path in paths:
        text = ctx.read_optional(path)
        if text is None:
            missing.append(str(path))
            continue
        reviewed, how = _reviewed(ctx, path, text)
        age = (ctx.now - reviewed).days
        (stale if age > limit else fresh).append(f"{path} ({how} {age} days ago)")
    data: dict[str, Any] = {"missing": missing, "stale": stale, "fresh": fresh}
    if missing:
        return failed(f"missing: {', '.join(missing)}" + _also(stale), **data)
    if stale:
        return warned(f"not reviewed within {limit} days: {', '.join(stale)}", **data)
    return passed(f"{len(fresh)} runbooks reviewed within {limit} days", **data)


def _also(stale: list[str]) -> str:
    return f"; not reviewed recently: {', '.join(stale)}" if stale else ""


def _reviewed(ctx: HostContext, path: Any, text: str) -> tuple[datetime, str]:
    match = _REVIEWED.search(text)
    if match:
        try:
            return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC), "reviewed"
        except ValueError:
            pass
    modified = datetime.fromtimestamp(ctx.stat(path).st_mtime, UTC)
    return modified, "modified"
