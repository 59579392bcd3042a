"""Audit check declarations: severities, outcomes, the @check registry and area discovery.

How to add an area or a check: the docstring of sbtc_ops.audit.framework."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sbtc_ops.errors import UsageError
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import (
    CommandTimeout,
    EvidenceError,
    HostFileError,
    ToolMissing,
    Unavailable,
)
from sbtc_ops.results import CheckResult, Status

__all__ = [
    "CommandTimeout",
    "EvidenceError",
    "HostFileError",
    "ToolMissing",
]


log = logging.getLogger(__name__)


# Areas in report order; areas not listed here follow, alphabetically.
AREA_ORDER = (
    "access",
    "firewall",
    "secrets",
    "keys",
    "logs",
    "monitoring",
    "nodes",
    "releases",
    "operations",
)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def weight(self) -> int:
        return _WEIGHTS[self]


_WEIGHTS = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 5}


# -- what a check returns -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner turns it into a Finding."""

    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None  # overrides the check's default when the fix depends on it


def passed(detail: str, **data: Any) -> Outcome:
    return Outcome(Status.PASS, detail, data)


def warned(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.WARN, detail, data, remediation)


def failed(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.FAIL, detail, data, remediation)


def skipped(reason: str, **data: Any) -> Outcome:
    return Outcome(Status.SKIP, reason, data)


# Raise anywhere inside a check: the check is reported as skipped with this reason. It is the
# host layer's Unavailable, so a fact the host does not offer (HostFileError, ToolMissing, an
# unreachable source) skips the check that needed it, with the host layer's reason.
Skip = Unavailable


@dataclass(frozen=True)
class Finding(CheckResult):
    """A CheckResult with the audit's extra columns."""

    area: str = ""
    title: str = ""
    severity: str = Severity.MEDIUM.value
    rationale: str = ""


# -- check declarations and the registry ----------------------------------------------------

CheckFunc = Callable[[HostContext], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    area: str
    title: str
    severity: Severity
    section: str
    rationale: str
    remediation: str
    func: CheckFunc
    timeout_s: float | None = None


REGISTRY: dict[str, Check] = {}
_ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]*-\d{3}$")


def check(
    check_id: str,
    *,
    area: str,
    title: str,
    severity: Severity,
    section: str,
    rationale: str,
    remediation: str,
    timeout_s: float | None = None,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check function under a stable id."""
    if not _ID_PATTERN.match(check_id):
        raise ValueError(f"check id {check_id!r} must look like ABC-001")

    def register(func: CheckFunc) -> CheckFunc:
        existing = REGISTRY.get(check_id)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"duplicate check id {check_id}")
        REGISTRY[check_id] = Check(
            check_id, area, title, severity, section, rationale, remediation, func, timeout_s
        )
        return func

    return register


# Area modules that failed to import: reported as error findings, never silently dropped.
LOAD_ERRORS: dict[str, str] = {}


def load_areas() -> None:
    """Import every area module of `sbtc_ops.audit.areas` (helpers live elsewhere, so a
    broken helper surfaces as the area that imports it, never as an area of its own)."""
    package = importlib.import_module("sbtc_ops.audit.areas")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"sbtc_ops.audit.areas.{info.name}")
        except Exception as exc:  # one broken module must not hide the others
            log.debug("audit module %s failed to import", info.name, exc_info=True)
            LOAD_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"


def _load_error_check(module: str, message: str, number: int) -> Check:
    def report(ctx: HostContext) -> Outcome:
        return Outcome(Status.ERROR, f"audit module {module!r} could not be loaded: {message}")

    return Check(
        f"LOAD-{number:03d}",
        module,
        f"Audit module {module} loads",
        Severity.HIGH,
        "sbtc-ops itself",
        "A module that does not load means its checks did not run.",
        "Reinstall sbtc-ops or report the error; run with -vv for the traceback.",
        report,
    )


def area_rank(area: str) -> tuple[int, str]:
    return (AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER), area)


def known_areas() -> list[str]:
    return sorted({c.area for c in REGISTRY.values()}, key=area_rank)


def select_checks(only: Iterable[str] | None = None) -> list[Check]:
    """The registered checks of the named areas (all when None), in report order."""
    load_areas()
    wanted = {name.strip() for name in only or () if name.strip()}
    unknown = wanted - set(known_areas())
    if unknown:
        raise UsageError(
            f"unknown audit area(s): {', '.join(sorted(unknown))}; "
            f"known areas: {', '.join(known_areas())}"
        )
    checks = [c for c in REGISTRY.values() if not wanted or c.area in wanted]
    if not wanted:
        checks += [
            _load_error_check(module, message, number)
            for number, (module, message) in enumerate(sorted(LOAD_ERRORS.items()), start=1)
        ]
    # Stable sort: within an area, checks keep the order their module declares them in.
    return sorted(checks, key=lambda c: area_rank(c.area))
