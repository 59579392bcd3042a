"""`sbtc-ops audit`: the host checks behind the best-practice page, one module per area.

See `sbtc_ops.audit.framework` for how checks are declared, run and scored, and how to add an
area module (drop a file with `AREA = "name"` in this package; it is discovered).
"""

from __future__ import annotations

from sbtc_ops.audit.framework import (
    REGISTRY,
    AuditReport,
    Check,
    CommandResult,
    Finding,
    HostContext,
    Outcome,
    RecordedRunner,
    Severity,
    Skip,
    SubprocessRunner,
    load_areas,
    run_audit,
    select_checks,
)

__all__ = [
    "REGISTRY",
    "AuditReport",
    "Check",
    "CommandResult",
    "Finding",
    "HostContext",
    "Outcome",
    "RecordedRunner",
    "Severity",
    "Skip",
    "SubprocessRunner",
    "load_areas",
    "run_audit",
    "select_checks",
]
