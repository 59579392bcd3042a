"""Logs: 90 days of the signer's, the Stacks node's and the Bitcoin node's logs.

Evidence: journald's configuration files (main file and drop-ins, systemd's precedence) and
the journal itself (``journalctl`` through the injectable runner); the logging driver of each
compose service (service ``logging``, else ``/etc/docker/daemon.json``, else json-file) with
the observed log rate from docker's own container records
(``/var/lib/docker/containers/*/config.v2.json`` → ``LogPath``); a log shipper's (vector)
configuration; logrotate rules; and the first line of local log files (``audit.log_files``).
Lynis checks that journald and logrotate exist, but not how long they keep anything.
"""

from __future__ import annotations

import json
import re
import tomllib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, TypeVar

from sbtc_ops.audit.framework import (
    EvidenceError,
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.host.compose import compose_files
from sbtc_ops.host.roles import ROLE_NAMES, RoleService, role_services
from sbtc_ops.yamlsafe import YamlError, load_bounded

T = TypeVar("T")

AREA = "logs"
SECTION = "Keep 90 days of logs"
DAY = 86400.0
_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": DAY, "day": DAY, "days": DAY,
    "w": 7 * DAY, "week": 7 * DAY, "weeks": 7 * DAY,
    "M": 30.44 * DAY, "month": 30.44 * DAY, "months": 30.44 * DAY,
    "y": 365.25 * DAY, "year": 365.25 * DAY, "years": 365.25 * DAY,
}  # fmt: skip
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
# Below this, SystemMaxUse is likely to cap history before 90 days on a busy node.
SMALL_JOURNAL_BYTES = 1024**3
REMOTE_DRIVERS = {"fluentd", "gelf", "awslogs", "splunk", "gcplogs", "logentries", "loki", "syslog"}
LOCAL_DRIVERS = {"json-file", "local"}
DOCKER_CONTAINERS = "/var/lib/docker/containers"
MAX_LINE_BYTES = 64 * 1024
"""A log line longer than this carries no time we could read (and is never read whole)."""
MAX_HEAD_BYTES = 256 * 1024
"""How much of a log's start is read to find its first timestamp."""
SHIPPERS = ("vector", "fluentd", "fluent-bit", "fluentbit")


def retention_days(ctx: HostContext) -> int:
    return ctx.settings.audit.log_retention_days


def parse_timespan(text: str) -> float:
    """systemd.time(7) span → seconds ("1year", "90d", "3month 2w", "3600")."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for match in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text):
        if match.start() != pos or match.group(2) not in _SPAN_UNITS:
            raise ValueError(f"{text!r} is not a systemd time span")
        total += float(match.group(1)) * _SPAN_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{text!r} is not a systemd time span")
    return total


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a size")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _days(seconds: float) -> str:
    return f"{seconds / DAY:.0f} days"


def combine(verdicts: list[tuple[str, str]], note: str = "", **data: Any) -> Outcome:
    """One outcome for several items (services, rules, files): the worst status, every text."""
    detail = "; ".join(text for _, text in verdicts) + note
    worst = {status for status, _ in verdicts}
    if "fail" in worst:
        return failed(detail, **data)
    if "error" in worst:
        raise EvidenceError(detail)
    if "warn" in worst:
        return warned(detail, **data)
    return passed(detail, **data)


# -- journald -------------------------------------------------------------------------------


@dataclass
class JournaldConfig:
    values: dict[str, tuple[str, str]]  # key -> (value, file)
    files: list[str]

    def get(self, key: str) -> str | None:
        entry = self.values.get(key)
        return entry[0] if entry else None

    def where(self, key: str) -> str:
        entry = self.values.get(key)
        return entry[1] if entry else "default"

    def parsed(self, key: str, parse: Callable[[str], T]) -> T:
        """parse(value of key); a value journald would reject is evidence naming its file."""
        try:
            return parse(self.get(key) or "")
        except ValueError as exc:
            raise EvidenceError(f"{self.where(key)}: {exc}") from None


def journald_config(ctx: HostContext) -> JournaldConfig:
    return ctx.memo("logs.journald", lambda: _journald_config(ctx))


def _journald_config(ctx: HostContext) -> JournaldConfig:
    main: list[str] = []
    drop_ins: dict[str, str] = {}  # file name -> path; later directories win
    for configured in ctx.settings.audit.journald_conf_paths:
        path = str(configured)
        if path.endswith(".d"):
            for found in ctx.glob(f"{path}/*.conf"):
                drop_ins[found.name] = str(found)
        elif ctx.exists(path):
            main.append(path)
    files = main + [drop_ins[name] for name in sorted(drop_ins)]
    values: dict[str, tuple[str, str]] = {}
    for path in files:
        section = ""
        for raw in ctx.read_text(path).splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]").strip()
            elif section == "Journal" and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = (value.strip(), path)
    if not files and not ctx.exists("/var/log/journal") and not ctx.exists("/etc/systemd"):
        raise Skip("no systemd-journald on this host")
    return JournaldConfig(values, files)


@check(
    "LOG-001",
    area=AREA,
    title="journald keeps logs on disk",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="With Storage=volatile (or auto without /var/log/journal) the journal lives in "
    "/run and every reboot erases it: no history to investigate an incident with.",
    remediation="Set `Storage=persistent` in /etc/systemd/journald.conf.d/sbtc.conf and restart "
    "systemd-journald (or create /var/log/journal).",
)
def journald_persistent(ctx: HostContext) -> Outcome:
    config = journald_config(ctx)
    storage = (config.get("Storage") or "auto").lower()
    where = config.where("Storage")
    if storage == "persistent":
        return passed(f"Storage=persistent ({where})")
    if storage == "auto" and ctx.exists("/var/log/journal"):
        return passed(f"Storage=auto ({where}) and /var/log/journal exists")
    if storage == "auto":
        return failed(
            f"Storage=auto ({where}) but /var/log/journal does not exist: journal is "
            "kept in memory only"
        )
    return failed(f"Storage={storage} ({where}): the journal does not survive a reboot")


@check(
    "LOG-002",
    area=AREA,
    title="journald retention settings allow 90 days",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="MaxRetentionSec deletes older entries outright; SystemMaxUse (default 10% of the "
    "filesystem, at most 4G) silently drops the oldest entries when the journal is full.",
    remediation="Remove MaxRetentionSec or set it to at least 90d, and give the journal room "
    "(e.g. `SystemMaxUse=8G`), or ship the logs to a store that keeps 90 days.",
)
def journald_retention(ctx: HostContext) -> Outcome:
    config = journald_config(ctx)
    need = retention_days(ctx) * DAY
    data: dict[str, Any] = {}
    problems, notes = [], []
    retention = config.get("MaxRetentionSec")
    if retention:
        seconds = config.parsed("MaxRetentionSec", parse_timespan)
        data["max_retention_s"] = seconds
        if 0 < seconds < need:
            problems.append(
                f"MaxRetentionSec={retention} ({config.where('MaxRetentionSec')}) "
                f"deletes entries after {_days(seconds)}"
            )
        else:
            notes.append(f"MaxRetentionSec={retention}")
    cap_text = config.get("SystemMaxUse")
    if cap_text:
        cap = config.parsed("SystemMaxUse", parse_size)
        data["system_max_use"] = cap
        notes.append(f"SystemMaxUse={cap_text}")
        if cap < SMALL_JOURNAL_BYTES:
            return warned(
                f"SystemMaxUse={cap_text} ({config.where('SystemMaxUse')}) is likely to cap "
                "history below 90 days; see LOG-003 for what the journal actually holds"
                + (f"; {'; '.join(problems)}" if problems else ""),
                **data,
            )
    else:
        notes.append("SystemMaxUse default (10% of the filesystem, at most 4G)")
    if problems:
        return failed("; ".join(problems), **data)
    return passed("; ".join(notes), **data)


def _journal_entry_time(line: str) -> datetime:
    try:
        entry = json.loads(line)
        micros = int(entry["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        raise EvidenceError("journalctl printed something that is not a JSON entry") from None
    return datetime.fromtimestamp(micros / 1e6, UTC)


@check(
    "LOG-003",
    area=AREA,
    title="The journal holds 90 days of history",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Configuration says what may be kept; the journal's oldest entry says what is. "
    "Size caps, vacuuming and reinstalls all shorten history silently.",
    remediation="Raise SystemMaxUse (LOG-002), keep Storage=persistent (LOG-001), or ship the "
    "logs to a store that keeps 90 days. A host younger than 90 days passes once it is older.",
)
def journal_history(ctx: HostContext) -> Outcome:
    need = retention_days(ctx)
    cutoff = ctx.now - timedelta(days=need)
    # The newest entry older than the cutoff exists iff the journal reaches back that far.
    result = ctx.run_ok(
        ["journalctl", "--output=json", "--no-pager", "--lines=1",
         f"--until=@{int(cutoff.timestamp())}"]
    )  # fmt: skip
    if "No journal files were found" in result.stderr + result.stdout:
        raise Skip("no journal files on this host (is systemd-journald running?)")
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("{")]
    if lines:
        entry = _journal_entry_time(lines[-1])
        return passed(
            f"the journal holds entries from before {cutoff:%Y-%m-%d} "
            f"(e.g. {entry:%Y-%m-%d %H:%M} UTC)"
        )
    boots = ctx.run_ok(["journalctl", "--list-boots", "--output=json", "--no-pager"])
    try:
        firsts = [int(b["first_entry"]) for b in json.loads(boots.stdout or "[]")]
    except (ValueError, KeyError, TypeError):
        raise EvidenceError("`journalctl --list-boots --output=json` is not a JSON list") from None
    if not firsts:
        return failed("the journal is empty")
    oldest = datetime.fromtimestamp(min(firsts) / 1e6, UTC)
    age = (ctx.now - oldest).days
    text = f"the oldest journal entry is {age} days old ({oldest:%Y-%m-%d}), less than {need}"
    capped = journald_config(ctx).get("MaxRetentionSec") or journald_config(ctx).get("SystemMaxUse")
    if capped:
        return failed(text, oldest=oldest.isoformat())
    return warned(text + " (a younger host passes once it is older)", oldest=oldest.isoformat())


# -- docker logging drivers -----------------------------------------------------------------


@dataclass(frozen=True)
class LogSetup:
    driver: str
    options: dict[str, str]
    source: str


def _daemon_logging(ctx: HostContext) -> LogSetup:
    path = ctx.settings.audit.docker_daemon_json
    text = ctx.read_optional(path)
    if not text:
        return LogSetup("json-file", {}, "docker default")
    try:
        document = json.loads(text)
    except ValueError:
        raise EvidenceError(f"{path}: not valid JSON") from None
    options = document.get("log-opts") or {}
    driver = str(document.get("log-driver") or "json-file")
    return LogSetup(driver, {str(k): str(v) for k, v in options.items()}, str(path))


def service_logging(ctx: HostContext, service: RoleService) -> LogSetup:
    logging = service.service.get("logging")
    if isinstance(logging, dict) and logging.get("driver"):
        options = {str(k): str(v) for k, v in (logging.get("options") or {}).items()}
        return LogSetup(str(logging["driver"]), options, f"{service.compose.path}")
    daemon = _daemon_logging(ctx)
    if isinstance(logging, dict) and logging.get("options"):
        options = {**daemon.options, **{str(k): str(v) for k, v in logging["options"].items()}}
        return LogSetup(daemon.driver, options, f"{daemon.source} + {service.compose.path}")
    return daemon


def _capacity(setup: LogSetup) -> int | None:
    """Bytes a local driver keeps per container; None = unlimited."""
    if setup.driver == "local":
        size = parse_size(setup.options.get("max-size", "20m").upper())
        return size * int(setup.options.get("max-file", "5"))
    size_text = setup.options.get("max-size")
    if not size_text or size_text == "-1":
        return None
    return parse_size(size_text.upper()) * int(setup.options.get("max-file", "1"))


def container_logs(ctx: HostContext) -> dict[str, str]:
    """compose service name → its container's json log path (docker's own records)."""

    def compute() -> dict[str, str]:
        found: dict[str, str] = {}
        for path in ctx.glob(f"{DOCKER_CONTAINERS}/*/config.v2.json"):
            try:
                record = json.loads(ctx.read_text(path))
            except (ValueError, Skip):
                continue
            labels = (record.get("Config") or {}).get("Labels") or {}
            service = labels.get("com.docker.compose.service")
            if service and record.get("LogPath"):
                found[str(service)] = str(record["LogPath"])
        return found

    return ctx.memo("logs.containers", compute)


def observed_rate(ctx: HostContext, log_path: str) -> float | None:
    """Bytes per day the container logged, from its log's size and first line's time."""
    try:
        size = ctx.stat(log_path).st_size
        first = json.loads(_first_line(ctx.read_head(log_path, MAX_LINE_BYTES)) or b"{}")
        started = datetime.fromisoformat(str(first["time"]).replace("Z", "+00:00"))
    except (Skip, OSError, ValueError, KeyError, TypeError):
        return None
    elapsed = (ctx.now - started).total_seconds()
    if elapsed < 3600 or size < 1024:
        return None  # too little to extrapolate from
    return size / elapsed * DAY


def _judge_service(ctx: HostContext, service: RoleService) -> tuple[str, str]:
    setup = service_logging(ctx, service)
    name = f"{ROLE_NAMES[service.role]} ({service.name})"
    need = retention_days(ctx)
    if setup.driver == "none":
        return "fail", f"{name}: logging driver none, nothing is kept"
    if setup.driver == "journald":
        return "pass", f"{name}: journald (retention per LOG-001..003)"
    if setup.driver in REMOTE_DRIVERS:
        return "pass", f"{name}: shipped with {setup.driver} (confirm {need} days at the sink)"
    if setup.driver not in LOCAL_DRIVERS:
        return "warn", f"{name}: logging driver {setup.driver}, retention unknown"
    capacity = _capacity(setup)
    recreated = "lost when the container is recreated (every upgrade)"
    if capacity is None:
        return "warn", f"{name}: {setup.driver} without max-size (unbounded, {recreated})"
    log_path = container_logs(ctx).get(service.name)
    rate = observed_rate(ctx, log_path) if log_path else None
    shown = f"{setup.driver} {capacity / 1024**2:.0f} MiB ({setup.source})"
    if rate is None:
        return "warn", f"{name}: {shown}, log rate unknown; {recreated}"
    kept = capacity / rate
    if kept < need:
        return "fail", f"{name}: {shown} holds ~{kept:.0f} days at {rate / 1024**2:.1f} MiB/day"
    return "warn", f"{name}: {shown} holds ~{kept:.0f} days, but {recreated}"


@check(
    "LOG-004",
    area=AREA,
    title="Container logs of the signer and its nodes are kept 90 days",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Docker's json-file driver keeps everything by default but only `max-size` × "
    "`max-file` when bounded, and deletes a container's logs when compose recreates it (every "
    "image upgrade). The reference deployment ships only the signer's logs; the nodes use the "
    "daemon default.",
    remediation="Ship every service's logs (signer, Stacks node, Bitcoin node) to a store with "
    "90-day retention (fluentd → vector → CloudWatch/Loki), or use the journald driver with "
    "enough journal space; size json-file max-size × max-file for 90 days at the observed rate.",
)
def docker_log_retention(ctx: HostContext) -> Outcome:
    services = role_services(ctx)
    if not services:
        raise Skip("no signer, Stacks or Bitcoin service found in the compose files")
    verdicts = [_judge_service(ctx, service) for service in services]
    data: dict[str, Any] = {"services": [{"status": s, "detail": d} for s, d in verdicts]}
    missing = sorted(set(ROLE_NAMES) - {s.role for s in services})
    note = (
        f" (not in the compose files: {', '.join(ROLE_NAMES[r] for r in missing)})"
        if missing
        else ""
    )
    return combine(verdicts, note, **data)


# -- log shipping (vector) ------------------------------------------------------------------


def _shipper_config(ctx: HostContext) -> tuple[str, PurePosixPath] | None:
    for service in _all_services(ctx):
        name, body, base = service
        image = str(body.get("image") or "").lower()
        if not any(s in image or name.lower() == s for s in SHIPPERS):
            continue
        for volume in body.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source and re.search(r"\.(ya?ml|toml|json|conf)$", str(source)):
                path = PurePosixPath(str(source))
                return name, path if path.is_absolute() else base / path
    return None


def _all_services(ctx: HostContext) -> list[tuple[str, dict[str, Any], PurePosixPath]]:
    return [
        (name, body, compose.directory)
        for compose in compose_files(ctx)
        for name, body in compose.services.items()
    ]


def _load_vector(ctx: HostContext, path: PurePosixPath) -> dict[str, Any]:
    text = ctx.read_text(path)
    try:
        if path.suffix == ".toml":
            document: Any = tomllib.loads(text)
        else:
            document = load_bounded(text)
    except YamlError as exc:
        raise EvidenceError(f"{path}: {exc}") from None
    except tomllib.TOMLDecodeError:
        raise EvidenceError(f"{path}: not valid {path.suffix.lstrip('.').upper()}") from None
    if not isinstance(document, dict):
        raise EvidenceError(f"{path}: not a vector configuration")
    return document


def _feeds_from(document: dict[str, Any], sink: dict[str, Any], sources: set[str]) -> bool:
    transforms = document.get("transforms") or {}
    pending, seen = list(sink.get("inputs") or []), set()
    while pending:
        name = str(pending.pop())
        if name in sources:
            return True
        if name in seen or name not in transforms:
            continue
        seen.add(name)
        pending.extend((transforms[name] or {}).get("inputs") or [])
    return False


@check(
    "LOG-005",
    area=AREA,
    title="Shipped logs reach a configured sink",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="With fluentd-async the signer's logs are buffered in memory and dropped if the "
    "shipper is missing or has no sink; retention is then the sink's (e.g. a CloudWatch log "
    "group's retentionInDays), which the host cannot see.",
    remediation="Run the shipper (vector) with a `fluent` source on the fluentd-address and a "
    "sink to durable storage; set the sink's retention to at least 90 days and confirm it there.",
)
def shipping_sink(ctx: HostContext) -> Outcome:
    shipped = [s for s in role_services(ctx) if service_logging(ctx, s).driver == "fluentd"]
    if not shipped:
        raise Skip("no service ships its logs with the fluentd driver")
    found = _shipper_config(ctx)
    names = ", ".join(s.name for s in shipped)
    if found is None:
        return failed(
            f"{names} log to fluentd but no vector/fluentd service with a mounted "
            "configuration is in the compose files"
        )
    shipper, path = found
    if not path.suffix or path.suffix == ".conf":
        return warned(
            f"{shipper} uses {path}: only vector configurations are read; confirm "
            "its outputs and their retention by hand"
        )
    document = _load_vector(ctx, path)
    sources = {
        n
        for n, s in (document.get("sources") or {}).items()
        if (s or {}).get("type") in ("fluent", "fluentd")
    }
    if not sources:
        return failed(f"{path}: no `fluent` source receives the containers' logs")
    durable = {
        name: str((sink or {}).get("type"))
        for name, sink in (document.get("sinks") or {}).items()
        if (sink or {}).get("type") not in ("console", "blackhole")
        and _feeds_from(document, sink or {}, sources)
    }
    data: dict[str, Any] = {"shipper": shipper, "config": str(path), "sinks": durable}
    if not durable:
        return failed(f"{path}: the fluent source feeds no durable sink", **data)
    shown = ", ".join(f"{n} ({t})" for n, t in sorted(durable.items()))
    return passed(
        f"{names} → {shipper} → {shown}; confirm the sink keeps "
        f"{retention_days(ctx)} days (not visible from this host)",
        **data,
    )


# -- logrotate ------------------------------------------------------------------------------

_PERIODS = {"hourly": 1 / 24, "daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}
LOG_NAME_HINTS = ("bitcoin", "stacks", "signer", "sbtc")


@dataclass
class RotateRule:
    paths: list[str]
    options: dict[str, str]
    source: str

    def retention(self) -> float | None:
        """Days kept; None when rotation is size-based only (no period)."""
        rotate = int(self.options.get("rotate", "0"))
        period = next((_PERIODS[p] for p in _PERIODS if p in self.options), None)
        maxage = self.options.get("maxage")
        if period is None:
            return float(maxage) if maxage else None
        kept = rotate * period
        return min(kept, float(maxage)) if maxage else kept


def logrotate_rules(ctx: HostContext) -> list[RotateRule]:
    files: list[str] = []
    for configured in ctx.settings.audit.logrotate_paths:
        path = str(configured)
        if ctx.host_path(path).is_dir():
            files += [str(p) for p in ctx.glob(f"{path}/*") if not p.name.startswith(".")]
        elif ctx.exists(path):
            files.append(path)
    if not files:
        raise Skip("no logrotate configuration found")
    defaults: dict[str, str] = {}
    rules: list[RotateRule] = []
    for path in files:
        rules += _parse_logrotate(ctx.read_text(path), path, defaults)
    return rules


def _parse_logrotate(text: str, source: str, defaults: dict[str, str]) -> list[RotateRule]:
    rules = []
    block: RotateRule | None = None
    in_script = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if in_script:
            in_script = line != "endscript"
            continue
        if line in ("postrotate", "prerotate", "firstaction", "lastaction", "preremove"):
            in_script = True
            continue
        if line.endswith("{"):
            block = RotateRule(line[:-1].split(), dict(defaults), source)
            continue
        if line == "}":
            if block is not None:
                rules.append(block)
            block = None
            continue
        key, _, value = line.partition(" ")
        target = block.options if block is not None else defaults
        if key in _PERIODS:
            for period in _PERIODS:
                target.pop(period, None)
            target[key] = ""
        else:
            target[key] = value.strip()
    return rules


def _node_log_rule(rule: RotateRule, patterns: list[str]) -> bool:
    for path in rule.paths:
        lowered = path.lower()
        if any(hint in lowered for hint in LOG_NAME_HINTS):
            return True
        if any(PurePosixPath(path).match(p) or p == path for p in patterns):
            return True
    return False


@check(
    "LOG-006",
    area=AREA,
    title="logrotate keeps node logs 90 days",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="logrotate deletes a log after `rotate` × period (or `maxage` days); the Debian "
    "default (weekly, rotate 4) keeps four weeks.",
    remediation="For the signer's and nodes' log files set e.g. `daily` + `rotate 100` (or "
    "`weekly` + `rotate 13`) and `compress`.",
)
def logrotate_retention(ctx: HostContext) -> Outcome:
    patterns = list(ctx.settings.audit.log_files)
    rules = [r for r in logrotate_rules(ctx) if _node_log_rule(r, patterns)]
    if not rules:
        raise Skip("no logrotate rule covers the signer's or nodes' logs")
    need = retention_days(ctx)
    verdicts = []
    for rule in rules:
        kept = rule.retention()
        paths = " ".join(rule.paths)
        if kept is None:
            verdicts.append(("warn", f"{paths}: size-based rotation only, age unbounded"))
        elif kept < need:
            verdicts.append(("fail", f"{paths}: kept ~{kept:g} days ({rule.source})"))
        else:
            verdicts.append(("pass", f"{paths}: kept ~{kept:g} days"))
    return combine(verdicts)


# -- local log files ------------------------------------------------------------------------

_ISO = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)")
_EPOCH = re.compile(r"\[(\d{10})(?:\.\d+)?\]")  # stacks-node: `INFO [1732486254.524190] …`


def line_time(line: str) -> datetime | None:
    """A log line's timestamp: JSON time fields, ISO-8601, or the Stacks node's epoch."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            entry = json.loads(stripped)
        except ValueError:
            entry = {}
        for key in ("timestamp", "time", "ts", "@timestamp"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str):
                stripped = value
                break
    match = _ISO.search(stripped[:80])
    if match:
        text = match.group(1).replace(" ", "T").replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    epoch = _EPOCH.search(stripped[:80])
    if epoch:
        return datetime.fromtimestamp(int(epoch.group(1)), UTC)
    return None


def _first_line(head: bytes) -> bytes | None:
    """The first complete line of `head` (a file's first bytes); None when the line is
    longer than `head`: a line that long is not a log line whose time we can read."""
    line, newline, _ = head.partition(b"\n")
    return line if newline or len(head) < MAX_LINE_BYTES else None


def _head_lines(ctx: HostContext, path: str) -> list[str]:
    """Up to 20 first lines of a log (gzip-compressed or not), from its first
    MAX_HEAD_BYTES (decompressed) only: a 100 MiB single line or a gzip bomb costs nothing."""
    if path.endswith(".gz"):
        compressed = ctx.read_head(path, MAX_HEAD_BYTES)
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed, MAX_HEAD_BYTES)
        except zlib.error:
            return []
    else:
        head = ctx.read_head(path, MAX_HEAD_BYTES)
    lines = head.split(b"\n")
    if len(head) >= MAX_HEAD_BYTES:
        lines = lines[:-1]  # the last one is cut short
    return [line[:MAX_LINE_BYTES].decode("utf-8", "replace") for line in lines[:20]]


def first_line_time(ctx: HostContext, path: str) -> datetime | None:
    try:
        lines = _head_lines(ctx, path)
    except Skip:
        return None
    for line in lines:  # the first few lines may be banners without a time
        moment = line_time(line)
        if moment is not None:
            return moment
    return None


@check(
    "LOG-007",
    area=AREA,
    title="Local log files reach back 90 days",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Whatever the configuration promises, the oldest line on disk is what an "
    "investigation can use.",
    remediation="Keep rotated logs for 90 days (LOG-006) or ship them (LOG-004/005); note that "
    "bitcoind shrinks debug.log at startup unless -shrinkdebugfile=0.",
)
def local_log_age(ctx: HostContext) -> Outcome:
    patterns = ctx.settings.audit.log_files
    if not patterns:
        raise Skip("no local log files configured (audit.log_files)")
    need = retention_days(ctx)
    verdicts: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    for pattern in patterns:
        files = [str(p) for p in ctx.glob(pattern)] + [
            str(p) for p in ctx.glob(f"{pattern}.*") if re.search(r"\.\d+(\.gz)?$", p.name)
        ]
        times = [t for f in sorted(set(files)) if (t := first_line_time(ctx, f)) is not None]
        if not files:
            verdicts.append(("fail", f"{pattern}: no such file"))
            continue
        if not times:
            verdicts.append(("error", f"{pattern}: no timestamp recognised in {len(files)} files"))
            continue
        oldest = min(times)
        age = (ctx.now - oldest).days
        data[pattern] = {"oldest": oldest.isoformat(), "files": len(files)}
        verdicts.append(
            (
                "pass" if age >= need else "fail",
                f"{pattern}: oldest line {age} days old ({oldest:%Y-%m-%d})",
            )
        )
    return combine(verdicts, **data)
