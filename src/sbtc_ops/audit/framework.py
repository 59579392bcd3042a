"""The audit framework, one import away: check declarations (registry), the host they inspect
(sbtc_ops.host: context, commands), the runner and the report with its score. This module
only re-exports them, so an area imports everything it needs of the framework from here.

Adding an area
--------------
1. Create ``src/sbtc_ops/audit/areas/<module>.py`` and set ``AREA = "<area>"`` at module
   level. Every module of ``sbtc_ops.audit.areas`` is imported by :func:`load_areas`, so no
   other file needs editing. An area imports this module, ``sbtc_ops.host`` (facts about the
   host and the signer beside it) and audit-only helpers of ``sbtc_ops.audit`` — never
   another area. Add the area to ``AREA_ORDER`` in registry only to fix its position in
   reports (unknown areas are listed last, alphabetically).
2. Declare each check as a function ``(ctx: HostContext) -> Outcome`` decorated with
   :func:`check`: a stable id (``LOG-001``; ids never change meaning once released), the
   area, a title, a :class:`Severity`, the best-practice section it serves, the rationale
   and the default remediation.
3. Return :func:`passed`, :func:`warned`, :func:`failed` or :func:`skipped`. Raise
   :class:`Skip` from anywhere (helpers included) when the check cannot apply: not root,
   tool missing, not configured (``Skip`` is the host layer's ``Unavailable``, so a host
   fact that is not there skips the check with the host layer's reason);
   ``x = skip_unless(fact, reason)`` takes a fact or skips when it is None or empty. Any
   other exception becomes an ``error`` finding with the exception text, never a crash —
   so raise with messages that hold no secret.
4. Touch the host only through the context: ``ctx.read_text``/``read_optional``/``stat``/
   ``glob``/``exists`` (they honour ``--root``) and ``ctx.run([...])`` (the injectable
   command runner, with timeouts; identical commands run once per audit and are shared).
   Share parsed data between checks with ``ctx.memo(key, compute)``.
5. Test with a fixture tree as ``root`` and a :class:`RecordedRunner` of recorded command
   outputs; assert the exact finding ids and statuses.

Results are :class:`Finding` objects, i.e. :class:`sbtc_ops.results.CheckResult` plus area,
title, severity and rationale. Every string in a finding is scrubbed of the secret values
the context knows before it leaves the runner.
"""

from __future__ import annotations

from sbtc_ops.audit.registry import (
    AREA_ORDER,
    LOAD_ERRORS,
    REGISTRY,
    Check,
    CheckFunc,
    CommandTimeout,
    EvidenceError,
    Finding,
    HostFileError,
    Outcome,
    Severity,
    Skip,
    ToolMissing,
    area_rank,
    check,
    failed,
    known_areas,
    load_areas,
    passed,
    select_checks,
    skip_unless,
    skipped,
    warned,
)
from sbtc_ops.audit.report import AuditReport
from sbtc_ops.audit.runner import run_audit
from sbtc_ops.host.commands import (
    CommandResult,
    CommandRunner,
    OfflineRunner,
    RecordedRunner,
    SubprocessRunner,
)
from sbtc_ops.host.context import (
    MAX_READ_BYTES,
    HostContext,
    parse_toml,
    settings_secrets,
    url_password,
)
from sbtc_ops.redact import PUBLIC_DEFAULT_PASSWORDS, REDACTED

__all__ = [
    "AREA_ORDER",
    "LOAD_ERRORS",
    "MAX_READ_BYTES",
    "PUBLIC_DEFAULT_PASSWORDS",
    "REDACTED",
    "REGISTRY",
    "AuditReport",
    "Check",
    "CheckFunc",
    "CommandResult",
    "CommandRunner",
    "CommandTimeout",
    "EvidenceError",
    "Finding",
    "HostContext",
    "HostFileError",
    "OfflineRunner",
    "Outcome",
    "RecordedRunner",
    "Severity",
    "Skip",
    "SubprocessRunner",
    "ToolMissing",
    "area_rank",
    "check",
    "failed",
    "known_areas",
    "load_areas",
    "parse_toml",
    "passed",
    "run_audit",
    "select_checks",
    "settings_secrets",
    "skip_unless",
    "skipped",
    "url_password",
    "warned",
]
