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

from sbtc_ops.config import Settings
from sbtc_ops.errors import UsageError
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.signer import db_rows, signer_config
from sbtc_ops.redact import redact_url
from sbtc_ops.signer.configkeys import judge_keys
from sbtc_ops.signer.dbfacts import MIGRATIONS
from sbtc_ops.signer.knowledge import HEAD, Knowledge, load, normalise_version
from sbtc_ops.signer.running import running_version


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
    unknown_migrations: list[str] = field(default_factory=list)  # applied, in no known release

    @property
    def destructive(self) -> list[dict[str, Any]]:
        return [m for m in self.migrations if m.get("effect") in ("deletes", "rewrites")]


def plan_upgrade(
    current: str,
    target: str,
    config_keys: Iterable[str] | None,
    table: Knowledge | None = None,
    applied: Iterable[str] | None = None,
) -> UpgradePlan:
    """`applied`: the migrations the database has (public.__sbtc_migrations); when known the
    plan starts from them, not from what `current` is supposed to have applied."""
    table = table or load()
    after = table.migrations_at(target)
    before = tuple(applied) if applied is not None else table.migrations_at(current)
    done, target_numbers = _numbers(before), _numbers(after)
    known = _numbers(table.migrations_at(HEAD))
    plan = UpgradePlan(current, target, config_read=config_keys is not None)
    for name in after:
        if migration_number(name) not in done:
            effect = table.migration_effects.get(name)
            plan.migrations.append(
                {
                    "name": name,
                    "effect": effect.effect if effect else "schema",
                    "detail": effect.detail if effect else "",
                }
            )
    # Only migrations the table knows can make a downgrade; others are reported as unknown.
    plan.downgrade_migrations = [m for m in before if migration_number(m) in known - target_numbers]
    plan.unknown_migrations = [m for m in before if migration_number(m) not in known]
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
    applied: tuple[str, ...] | None = None  # the database's migrations, when read
    plan_only: bool = False  # no backup, no verdict: `reasons` are problems of the plan

    @property
    def ok(self) -> bool:
        return not self.reasons if self.plan_only else self.go is not False

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "ok": self.ok,
            "go": self.go,
            "plan_only": self.plan_only,
            "applied_migrations": list(self.applied) if self.applied is not None else None,
            "from": plan.current,
            "from_source": self.current_source,
            "to": plan.target,
            "backup": self.backup,
            "verify": self.verify,
            "migrations": plan.migrations,
            "destructive_migrations": [m["name"] for m in plan.destructive],
            "downgrade_migrations": plan.downgrade_migrations,
            "unknown_migrations": plan.unknown_migrations,
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


@dataclass(frozen=True)
class Current:
    """The running release, how it was found, and the database's applied migrations."""

    version: str
    source: str
    applied: tuple[str, ...] | None  # None: the database could not be read
    notes: tuple[str, ...] = ()


def current_release(
    settings: Settings, given: str | None, table: Knowledge | None = None
) -> Current:
    """--from, else the running image (tag, label, /info build_info), else the release whose
    migrations are exactly those the database has applied. The applied migrations are read
    whenever the database answers: they, not a version's nominal set, are what a plan starts
    from."""
    table = table or load()
    applied, why_no_db = applied_migrations(settings)
    notes: list[str] = []
    if given:
        version, source = target_version(given, table), "--from"
    else:
        try:
            version, source = _running_image_version(settings)
        except UsageError as image_error:
            if applied is None:
                raise UsageError(
                    f"cannot tell the running signer version ({image_error.message}; "
                    f"{why_no_db}); pass --from"
                ) from None
            version, source = version_from_migrations(applied, table)
    if applied is not None:
        differs = _numbers(applied) ^ _numbers(table.migrations_at(version))
        if differs and source != "__sbtc_migrations":
            notes.append(
                f"the database's applied migrations are not those of v{version} ({source}): "
                f"the plan starts from what is applied ({len(applied)} migrations)"
            )
    else:
        notes.append(f"the applied migrations were not read ({why_no_db}): planned from v{version}")
    return Current(version, source, applied, tuple(notes))


def _running_image_version(settings: Settings) -> tuple[str, str]:
    try:
        return running_version(HostContext(settings))
    except Unavailable as exc:
        raise UsageError(str(exc)) from None


def applied_migrations(settings: Settings) -> tuple[tuple[str, ...] | None, str]:
    """(the migrations public.__sbtc_migrations lists, or None and why not)."""
    try:
        rows = db_rows(HostContext(settings), MIGRATIONS)
    except (Unavailable, EvidenceError) as exc:
        return None, str(exc)
    return tuple(str(row[0]) for row in rows), ""


def migration_number(name: str) -> str:
    """`0022__add_is_canonical….sql` → `0022`: migrations are applied in number order, and
    the number is what identifies one across the signer's renames."""
    return name.split("__", 1)[0]


def _numbers(names: Iterable[str]) -> set[str]:
    return {migration_number(n) for n in names}


def version_from_migrations(applied: Iterable[str], table: Knowledge) -> tuple[str, str]:
    """The newest tagged release all of whose migrations are applied (releases without a
    migration of their own share a set: the newest is named, and the plan is the same)."""
    wanted = _numbers(applied)
    tagged = [v for v in table.versions if v != HEAD and _numbers(table.migrations_at(v)) <= wanted]
    if not tagged:
        newest = sorted(wanted)[-1] if wanted else "none"
        raise UsageError(
            f"the database's applied migrations (newest {newest}) match no release in "
            "sbtc-ops' table; pass --from"
        )
    return tagged[-1], "__sbtc_migrations"


def config_keys(settings: Settings) -> set[str] | None:
    """The keys of the signer's configuration (file + SIGNER_* env), None when not readable."""
    try:
        return set(signer_config(HostContext(settings)).values)
    except (Unavailable, EvidenceError):
        return None


Phase = Callable[[str], None]


@dataclass(frozen=True)
class BackupProof:
    """A backup taken now and its verification, as upgrade-check reports them."""

    backup: dict[str, Any] | None = None  # id, size, migrations, newest verified key
    verify: dict[str, Any] | None = None  # verdict, ok, failed_checks
    problem: str | None = None  # why not to upgrade (the backup failed or did not verify)


ProveBackup = Callable[[Settings, Phase], BackupProof]


def run_upgrade_check(
    settings: Settings,
    to: str,
    *,
    from_version: str | None = None,
    plan_only: bool = False,
    phase: Phase = lambda _: None,
    prove_backup: ProveBackup,
) -> UpgradeReport:
    """The plan from the running release to `to`; unless `plan_only`, a backup taken and
    verified now (`prove_backup`: the caller's step, so the signer package does not import
    backup and verify, which import the signer's schema tables) decides go/no-go."""
    target = target_version(to)
    current = current_release(settings, from_version)
    plan = plan_upgrade(current.version, target, config_keys(settings), applied=current.applied)
    report = UpgradeReport(plan, current.source, applied=current.applied)
    report.warnings.extend(current.notes)
    _judge_plan(report)
    if plan_only:
        report.plan_only = True
        return report
    proof = prove_backup(settings, phase)
    report.backup, report.verify = proof.backup, proof.verify
    if proof.problem:
        report.reasons.append(proof.problem)
    report.go = not report.reasons
    report.rollback = _rollback(settings, report, to)
    return report


def _judge_plan(report: UpgradeReport) -> None:
    plan = report.plan
    if plan.current == plan.target and not plan.migrations:
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
    if plan.unknown_migrations:
        report.warnings.append(
            "applied migrations no release in sbtc-ops' table ships (a newer signer, or a "
            f"hand-made change?): {', '.join(plan.unknown_migrations)}"
        )
    if plan.removed_keys:
        keys = ", ".join(f"{k} (removed in {v})" for k, v in plan.removed_keys.items())
        report.warnings.append(f"v{plan.target} ignores these configured keys: {keys}")
    if not plan.config_read:
        report.warnings.append("the signer's configuration was not read (signer.config_path)")


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
