"""One entry point for the CLI (and `serve`): build the host context, pick checks, run them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sbtc_ops.audit.framework import (
    AuditReport,
    CommandRunner,
    HostContext,
    run_audit,
    select_checks,
)
from sbtc_ops.audit.ports import allowed_ports
from sbtc_ops.audit.probe import (
    ProbeSpec,
    default_probe_ports,
    parse_target,
    probe_check,
    resolve,
)
from sbtc_ops.config import Settings


def audit_host(
    settings: Settings,
    *,
    areas: Sequence[str] = (),
    root: Path = Path("/"),
    probe: ProbeSpec | None = None,
    runner: CommandRunner | None = None,
    now: datetime | None = None,
) -> AuditReport:
    """Audit the host (or the tree under root); raises UsageError for bad areas/targets."""
    ctx = HostContext(settings, root=root, runner=runner, now=now)
    if probe is None:
        return run_audit(ctx, select_checks(areas))
    allowed = {port for port, proto in allowed_ports(ctx) if proto == "tcp"}
    target = parse_target(probe.target, default_probe_ports(allowed))
    resolve(target.host)  # an unknown host means the probe cannot run: exit 2, not a finding
    check = probe_check(
        target, connect_timeout_s=probe.connect_timeout_s, deadline_s=probe.deadline_s
    )
    return run_audit(ctx, [check])
