"""The report of one restore drill (`verify`): its verdict, every check, the keys it read,
the timings and budgets; what `--json`, the terminal and HTML renderers and the attestation
are made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sbtc_ops.results import CheckResult, Status


@dataclass
class VerifyReport:
    backup: str
    verdict: str = "error"
    db_aggregate_key: str | None = None
    onchain_aggregate_key: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    archive: dict[str, Any] = field(default_factory=dict)
    key_source: str = "chain"  # or checks.GIVEN_BY_HAND (--expected-key: no chain read)
    expected_aggregate_key: str | None = None  # --expected-key: never an on-chain reading
    budgets: dict[str, Any] | None = None  # the drill's budgets and peak usage (budget.py)
    # The layers the archive's programs ran in (pg/sandbox.py Isolation.as_dict).
    sandbox: dict[str, Any] = field(default_factory=dict)
    # For the attestation: the newest verified row's signer set and threshold, and what each
    # Stacks endpoint answered.
    dkg_newest: dict[str, Any] | None = None
    chain_endpoints: list[dict[str, Any]] = field(default_factory=list)
    attestation: dict[str, Any] | None = None  # attest.service.AttestOutcome.to_json()
    chain_tip: dict[str, Any] | None = None  # the Stacks tip seen right after the key read

    @property
    def ok(self) -> bool:
        return self.verdict == "match" and not any(c.status.is_problem for c in self.checks)

    @property
    def failed_checks(self) -> list[str]:
        return [c.id for c in self.checks if c.status.is_problem]

    @property
    def summary(self) -> str:
        """One line: the verdict and every check that did not pass."""
        failed = self.failed_checks
        if not failed:
            return self.verdict
        return f"{self.verdict}; not passed: {', '.join(failed)}"

    @property
    def could_not_run(self) -> bool:
        """Exit 2: no verdict and nothing found wrong (e.g. no endpoint answered). Endpoints
        that answer but disagree are a problem found (exit 1), though no verdict is given."""
        return self.verdict == "error" and not any(c.status == Status.FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "backup": self.backup,
            "db_aggregate_key": self.db_aggregate_key,
            "onchain_aggregate_key": self.onchain_aggregate_key,
            "expected_aggregate_key": self.expected_aggregate_key,
            "key_source": self.key_source,
            "summary": self.summary,
            # The one JSON shape of a check, shared with audit and key check.
            "checks": [c.to_json() for c in self.checks],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "archive": self.archive,
            "budgets": self.budgets,
            "sandbox": self.sandbox,
            "chain_tip": self.chain_tip,
            "attestation": self.attestation,
        }
