"""An audit's result: its findings, their counts and the severity-weighted score."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sbtc_ops.audit.registry import Finding, Severity
from sbtc_ops.results import Status

# -- running --------------------------------------------------------------------------------


@dataclass
class AuditReport:
    findings: list[Finding]
    root: str
    started_at: datetime
    duration_s: float
    areas: list[str]

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for finding in self.findings:
            counts[finding.status.value] += 1
        return counts

    @property
    def score(self) -> int | None:
        """Hardening index like Lynis': severity-weighted share of passing checks, 0–100.

        A warning earns half its weight; fail and error earn nothing; skipped checks do
        not count either way (they were not evaluated).
        """
        earned = 0.0
        possible = 0
        for finding in self.findings:
            if finding.status is Status.SKIP:
                continue
            weight = Severity(finding.severity).weight
            possible += weight
            earned += weight * _EARNED[finding.status]
        return round(100 * earned / possible) if possible else None

    def at_or_above(self, threshold: Status) -> list[Finding]:
        levels = _FAIL_ON[threshold]
        return [f for f in self.findings if f.status in levels]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "score": self.score,
            "summary": self.counts(),
            "areas": self.areas,
            "findings": [finding.to_json() for finding in self.findings],
        }


_EARNED = {Status.PASS: 1.0, Status.WARN: 0.5, Status.FAIL: 0.0, Status.ERROR: 0.0}
# An error means the property could not be verified: it counts like a failure.
_FAIL_ON = {
    Status.WARN: {Status.WARN, Status.FAIL, Status.ERROR},
    Status.FAIL: {Status.FAIL, Status.ERROR},
}
