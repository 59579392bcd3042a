"""`sbtc-ops upgrade-check --to VERSION|IMAGE`: is it safe to move the signer to that release?

Upgrading migrates the database at start (the image's ENTRYPOINT passes `--migrate-db`), and
some migrations delete (0020) or rewrite (0021) data, so the single most useful safety net is a
backup taken and *verified* right before the image changes. This takes one, verifies it, and
reports what the target will do: the migrations it applies (destructive ones flagged), the
config keys it stops reading or newly requires, the incidents fixed in between; then go/no-go
and the rollback command (which backup to restore, which image to run again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sbtc_ops.config import Settings, redact_url
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.signer.configkeys import judge_keys
from sbtc_ops.signer.knowledge import HEAD, Knowledge, load, normalise_version


@dataclass
class UpgradePlan:
    """What moving from `current` to `target` does, from the release table alone."""

    current: str
    target: str
    migrations: list[dict[str, Any]] = field(default_factory=list)
    downgrade_migrations: list[str] = field(default_factory=list)
    removed_keys: dict[str, str] = field(default_factory=dict)  # in the config, not read after
    missing_required: list[str] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    incidents: list[dict[str, str]] = field(default_factory=list)
    config_read: bool = False

    @property
    def destructive(self) -> list[dict[str, Any]]:
        return [m for m in self.migrations if m.get("effect") in ("deletes", "rewrites")]


def plan_upgrade(
    current: str, target: str, config_keys: Iterable[str] | None, table: Knowledge | None = None
) -> UpgradePlan:
    table = table or load()
    before, after = table.migrations_at(current), table.migrations_at(target)
    plan = UpgradePlan(current, target, config_read=config_keys is not None)
    for name in after:
        if name not in before:
            effect = table.migration_effects.get(name)
            plan.migrations.append(
                {
                    "name": name,
                    "effect": effect.effect if effect else "schema",
                    "detail": effect.detail if effect else "",
                }
            )
    plan.downgrade_migrations = [m for m in before if m not in after]
    plan.new_keys = sorted(table.keys_at(target) - table.keys_at(current))
    if config_keys is not None:
        report = judge_keys(config_keys, target, table)
        plan.removed_keys = dict(report.removed)
        plan.missing_required = list(report.missing_required)
    low, high = sorted((table.index(current), table.index(target)))
    fixed = table.incidents_fixed_between(table.versions[low], table.versions[high])
    plan.incidents = [{"id": i.id, "fixed_in": i.fixed_in, "title": i.title} for i in fixed]
    return plan


@dataclass
class UpgradeReport:
    plan: UpgradePlan
    current_source: str
    backup: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    go: bool | None = None  # None: --plan-only
    reasons: list[str] = field(default_factory=list)  # why not go
    warnings: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "ok": self.go is not False,
            "go": self.go,
            "from": plan.current,
            "from_source": self.current_source,
            "to": plan.target,
            "backup": self.backup,
            "verify": self.verify,
            "migrations": plan.migrations,
            "destructive_migrations": [m["name"] for m in plan.destructive],
            "downgrade_migrations": plan.downgrade_migrations,
            "config_read": plan.config_read,
            "removed_keys": plan.removed_keys,
            "missing_required_keys": plan.missing_required,
            "new_keys": plan.new_keys,
            "incidents_fixed": plan.incidents,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "rollback": self.rollback,
        }


def target_version(text: str, table: Knowledge | None = None) -> str:
    """--to as a version of the table: v1.3.3, 1.3.3, HEAD or an image reference."""
    table = table or load()
    version = normalise_version(text)
    if version is None:
        raise UsageError(
            f"--to {text!r} names no signer version; give v1.3.3 or an image like "
            "ghcr.io/stacks-sbtc/sbtc:signer-v1.3.3"
        )
    if version not in table.versions:
        known = ", ".join(r.tag for r in table.releases)
        raise UsageError(f"--to: signer v{version} is not in sbtc-ops' release table ({known})")
    return version


def current_version(settings: Settings, given: str | None) -> tuple[str, str]:
    """--from, else what the audit sees running (image tag/label, /info build_info)."""
    if given:
        return target_version(given), "--from"
    from sbtc_ops.audit.framework import HostContext, Skip
    from sbtc_ops.audit.signerside import running_version

    try:
        return running_version(HostContext(settings))
    except Skip as exc:
        raise UsageError(f"cannot tell the running signer version ({exc}); pass --from") from None


def config_keys(settings: Settings) -> set[str] | None:
    """The keys of the signer's configuration (file + SIGNER_* env), None when not readable."""
    from sbtc_ops.audit.framework import EvidenceError, HostContext, Skip
    from sbtc_ops.audit.signerside import signer_config

    try:
        return set(signer_config(HostContext(settings)).values)
    except (Skip, EvidenceError):
        return None


Phase = Callable[[str], None]


def run_upgrade_check(
    settings: Settings,
    to: str,
    *,
    from_version: str | None = None,
    plan_only: bool = False,
    phase: Phase = lambda _: None,
) -> UpgradeReport:
    target = target_version(to)
    current, source = current_version(settings, from_version)
    plan = plan_upgrade(current, target, config_keys(settings))
    report = UpgradeReport(plan, source)
    _judge_plan(report)
    if plan_only:
        return report
    _backup_and_verify(settings, report, phase)
    report.go = not report.reasons
    report.rollback = _rollback(settings, report, to)
    return report


def _judge_plan(report: UpgradeReport) -> None:
    plan = report.plan
    if plan.current == plan.target:
        report.warnings.append(f"already on v{plan.current}: nothing to migrate")
    if plan.downgrade_migrations:
        report.reasons.append(
            f"v{plan.target} is older than v{plan.current} and does not know the applied "
            f"migrations {', '.join(plan.downgrade_migrations)}: restore the backup taken "
            "before the upgrade instead"
        )
    if plan.missing_required:
        report.reasons.append(
            f"v{plan.target} requires {', '.join(plan.missing_required)}, not set"
        )
    for migration in plan.destructive:
        report.warnings.append(f"{migration['name']} {migration['detail']}")
    if plan.removed_keys:
        keys = ", ".join(f"{k} (removed in {v})" for k, v in plan.removed_keys.items())
        report.warnings.append(f"v{plan.target} ignores these configured keys: {keys}")
    if not plan.config_read:
        report.warnings.append("the signer's configuration was not read (signer.config_path)")


def _backup_and_verify(settings: Settings, report: UpgradeReport, phase: Phase) -> None:
    from sbtc_ops.backup.service import request_from_settings, run_backup
    from sbtc_ops.verify.drill import VerifyRequest, run_verify

    request = request_from_settings(settings, None)  # no database configured: exit 2
    phase("taking a backup")
    try:
        outcome = run_backup(settings, request)
    except SbtcOpsError as exc:
        report.reasons.append(f"the backup failed: {exc.message}")
        return
    manifest = outcome.manifest
    report.backup = {
        "id": manifest.id,
        "size": manifest.total_size,
        "migrations": len(manifest.migrations),
        "newest_verified_aggregate_key": manifest.newest_verified_aggregate_key,
    }
    phase(f"verifying backup {manifest.id}")
    verify_request = VerifyRequest(backup_ref=manifest.id, jobs=settings.serve.verify_jobs)
    verified = run_verify(settings, verify_request)
    failed = [c.id for c in verified.checks if c.status.is_problem]
    report.verify = {"verdict": verified.verdict, "ok": verified.ok, "failed_checks": failed}
    if not verified.ok:
        report.reasons.append(
            f"backup {manifest.id} did not verify ({verified.verdict}"
            + (f"; {', '.join(failed)}" if failed else "")
            + "): do not upgrade without a restorable backup"
        )


def _rollback(settings: Settings, report: UpgradeReport, to: str) -> list[str]:
    if report.backup is None:
        return []
    backup_id = report.backup["id"]
    db = settings.effective_db_url
    target = redact_url(db.get_secret_value()) if db is not None else "<signer database URL>"
    dbname = target.rsplit("/", 1)[-1].split("?", 1)[0] or "signer"
    current = report.plan.current
    image = "HEAD" if current == HEAD else f"ghcr.io/stacks-sbtc/sbtc:signer-v{current}"
    return [
        "stop the signer (docker compose stop sbtc-signer)",
        f"sbtc-ops restore {backup_id} --target-db '{target}' --overwrite-live-db {dbname} --force",
        f"set the signer image back to {image} (pinned by digest) and start it",
    ]
