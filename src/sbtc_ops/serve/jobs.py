"""The jobs `serve` schedules: their names, their schedule (job_specs) and their bodies.

How the daemon runs each one as a child process is serve/children.py. The job bodies below
run in that child. Chain and audit results live only in their run's data
(they run often); backups and verifies also record events through their own services.

Each job body imports its service inside the function: the daemon imports this module for
`job_specs` and stays small, and each job's child process loads only its own job's code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sbtc_ops import redact
from sbtc_ops.config import Settings, secret_values
from sbtc_ops.history import JobName, JobOutcome
from sbtc_ops.host.endpoints import public_url
from sbtc_ops.proc import InBackground
from sbtc_ops.results import Status
from sbtc_ops.serve.scheduler import JobResult, JobSpec
from sbtc_ops.state import EventKind, StateStore
from sbtc_ops.verify.budget import verify_job_timeout

T = TypeVar("T")
AUDIT_EVENT_KEEP = 48  # open findings of the last two days of hourly audits

# Frequent jobs keep a shorter run history so a year stays small (counts survive pruning).
_SHORT_HISTORY_DAYS = 35.0


def job_specs(settings: Settings) -> list[JobSpec]:
    """The jobs the settings enable, with their schedules, caps and ordering."""
    return [*_backup_specs(settings), *_check_specs(settings)]


def _backup_specs(settings: Settings) -> list[JobSpec]:
    serve = settings.serve
    keep = float(serve.history_days)
    specs = []
    if serve.backup_cron:
        # Its prune would delete backups a verify reads (the per-backup locks make it keep
        # them, but then they outlive the policy): at catch-up the backup goes first, and a
        # backup never starts beside a verify.
        beside = (JobName.VERIFY, JobName.VERIFY_ROTATE) if serve.prune_after_backup else ()
        specs.append(
            JobSpec(
                JobName.BACKUP,
                serve.backup_cron,
                timeout_s=serve.job_timeout_s,
                keep_days=keep,
                group=JobName.BACKUP,
                not_beside=beside,
                priority=1,
            )
        )
    # A verify ends itself at its drill's deadline (verify.deadline_*, scaled by the archive's
    # size); the job is stopped only a grace period after the longest such deadline.
    verify_cap = verify_job_timeout(settings)
    if serve.verify_after_backup and serve.backup_cron:
        specs.append(
            JobSpec(
                JobName.VERIFY,
                after=JobName.BACKUP,
                timeout_s=verify_cap,
                keep_days=keep,
                priority=2,
            )
        )
    if serve.verify_rotate_cron:
        specs.append(
            JobSpec(
                JobName.VERIFY_ROTATE,
                serve.verify_rotate_cron,
                timeout_s=verify_cap,
                keep_days=keep,
                priority=3,
            )
        )
    return specs


def _check_specs(settings: Settings) -> list[JobSpec]:
    serve = settings.serve
    cap = serve.job_timeout_s
    short = _SHORT_HISTORY_DAYS
    specs = []
    if serve.audit_cron:
        specs.append(
            JobSpec(JobName.AUDIT, serve.audit_cron, timeout_s=min(cap, 600), keep_days=short)
        )
    if serve.chain_check_cron:
        specs.append(
            JobSpec(
                JobName.CHAIN_CHECK,
                serve.chain_check_cron,
                timeout_s=min(cap, 300),
                keep_days=short,
            )
        )
    if serve.signer_check_cron:
        # In the backup group: it takes a backup itself when the signer's image changes.
        specs.append(
            JobSpec(
                JobName.SIGNER_CHECK,
                serve.signer_check_cron,
                timeout_s=min(cap, 900),
                keep_days=short,
                group=JobName.BACKUP,
            )
        )
    if serve.dkg_watch:
        # No schedule of its own: the DKG watch asks for it (or a timer: serve --once).
        specs.append(
            JobSpec(
                JobName.DKG_BACKUP,
                timeout_s=min(cap, 900),
                keep_days=float(serve.history_days),
                group=JobName.BACKUP,
                priority=0,
            )
        )
    return specs


# -- the child side: job bodies -------------------------------------------------------------


def run_job(name: str, settings: Settings) -> JobResult:
    bodies: dict[str, Callable[[Settings], JobResult]] = {
        JobName.BACKUP: backup_job,
        JobName.VERIFY: verify_latest_job,
        JobName.VERIFY_ROTATE: verify_rotate_job,
        JobName.AUDIT: audit_job,
        JobName.CHAIN_CHECK: chain_check_job,
        JobName.DKG_BACKUP: dkg_backup_job,
        JobName.SIGNER_CHECK: signer_check_job,
    }
    return bodies[name](settings)


def signer_check_job(settings: Settings) -> JobResult:
    """DKG state, DB size/growth, event lag, and a backup when the signer's image changes."""
    # Inside the function like every job body (the module docstring says why).
    from sbtc_ops.serve.signercheck import signer_check_job as body

    return body(settings)


def dkg_backup_job(settings: Settings) -> JobResult:
    """`backup --dkg-only` to every configured storage: kilobytes, seconds."""
    return backup_job(settings, dkg_only=True)


def backup_job(settings: Settings, *, dkg_only: bool = False) -> JobResult:
    # a job's own code, loaded when the job runs (module docstring)
    from sbtc_ops.backup.service import prune_all, request_from_settings, run_backup

    outcome = run_backup(settings, request_from_settings(settings, None, dkg_only=dkg_only))
    manifest = outcome.manifest
    data: dict[str, Any] = {
        "backup": manifest.id,
        "size": manifest.total_size,
        "duration_s": manifest.duration_s,
        "locations": len(outcome.locations),
    }
    if manifest.dkg_keys:
        data["newest_dkg_key"] = manifest.dkg_keys[0].aggregate_key
    summary = f"{manifest.id}: {manifest.total_size} bytes in {manifest.duration_s:.1f} s"
    if settings.serve.prune_after_backup and not dkg_only:
        report = prune_all(settings, None, dry_run=False)
        data["pruned"] = sum(len(r["deleted"]) for r in report)
    if outcome.failed:
        # Stored, but not everywhere: the job is a problem, naming where it is missing.
        data["failed_locations"] = outcome.failed
        missing = "; ".join(outcome.failed.values())
        return JobResult(JobOutcome.PROBLEM, f"{summary}; not stored everywhere: {missing}", data)
    return JobResult(JobOutcome.OK, summary, data)


def verify_latest_job(settings: Settings) -> JobResult:
    return _verify(settings, None)


def verify_rotate_job(settings: Settings) -> JobResult:
    """Verify an older retained backup: the one verified longest ago (never, first)."""
    # a job's own code, loaded when the job runs (module docstring)
    from sbtc_ops.backup.service import survey

    rows = survey(settings, None).rows  # what is reachable (one storage down costs no verify)
    with StateStore.open(settings.state_dir) as store:

        def last_verified(backup_id: str) -> float:
            event = store.last_event(EventKind.VERIFY, backup_id)
            return event.at if event else 0.0

        chosen = choose_rotation(rows, last_verified)
    if chosen is None:
        return JobResult(JobOutcome.OK, "no older backup to verify yet", {})
    return _verify(settings, chosen)


def choose_rotation(
    rows: list[dict[str, Any]], last_verified: Callable[[str], float]
) -> str | None:
    """Among complete full backups except the newest (verified after every backup anyway),
    the one whose last verify is oldest; never verified comes first, then the oldest id."""
    ids: list[str] = sorted(
        {
            str(row["id"])
            for row in rows
            if row["state"] != "incomplete" and row.get("kind") in (None, "full")
        },
        reverse=True,
    )
    older = ids[1:]
    if not older:
        return None
    return min(older, key=lambda backup_id: (last_verified(backup_id), backup_id))


def _verify(settings: Settings, backup_id: str | None) -> JobResult:
    # a job's own code, loaded when the job runs (module docstring)
    from sbtc_ops.verify.drill import VerifyRequest, run_verify

    request = VerifyRequest(
        backup_ref=backup_id, latest=backup_id is None, jobs=settings.verify.jobs
    )
    report = run_verify(settings, request)
    failed = [c.id for c in report.checks if c.status.is_problem]
    data = {"backup": report.backup, "verdict": report.verdict, "failed_checks": failed}
    summary = f"{report.backup}: {report.verdict}" + (f" ({', '.join(failed)})" if failed else "")
    if report.ok:
        return JobResult(JobOutcome.OK, summary, data)
    return JobResult(
        JobOutcome.ERROR if report.could_not_run else JobOutcome.PROBLEM, summary, data
    )


def audit_job(settings: Settings) -> JobResult:
    # a job's own code, loaded when the job runs (module docstring)
    from sbtc_ops.audit.service import audit_host

    report = interruptible(lambda: audit_host(settings))
    counts: dict[str, int] = {}
    open_findings = []
    for finding in report.findings:
        if finding.status in (Status.FAIL, Status.ERROR, Status.WARN):
            key = f"{finding.area}|{finding.severity}|{finding.status.value}"
            counts[key] = counts.get(key, 0) + 1
            open_findings.append(
                {
                    "id": finding.id,
                    "area": finding.area,
                    "title": finding.title,
                    "severity": finding.severity,
                    "status": finding.status.value,
                    "detail": finding.detail,
                    "remediation": finding.remediation,
                }
            )
    data = {"score": report.score, "open": counts, "summary_counts": report.counts()}
    with StateStore.open(settings.state_dir) as store:
        store.record_event(EventKind.AUDIT, "host", "ok", {**data, "findings": open_findings})
        store.prune_events(EventKind.AUDIT, AUDIT_EVENT_KEEP)
    problems = sum(1 for f in open_findings if f["status"] != Status.WARN.value)
    summary = f"score {report.score}, {len(open_findings)} open findings ({problems} failing)"
    return JobResult(JobOutcome.PROBLEM if problems else JobOutcome.OK, summary, data)


def chain_check_job(settings: Settings) -> JobResult:
    # a job's own code, loaded when the job runs (module docstring)
    from sbtc_ops.stacks import NOT_SET, read_aggregate_key

    reading = interruptible(lambda: read_aggregate_key(settings))
    secrets = secret_values(settings)
    endpoints = [
        {
            "endpoint": public_url(outcome.url),
            "up": outcome.ok,
            "elapsed_s": round(outcome.elapsed_s, 3),
            "error": None if outcome.ok else redact.scrub(outcome.error or "", secrets)[:200],
        }
        for outcome in reading.outcomes
    ]
    key = reading.agreed
    if key is not None and key != NOT_SET:
        remember_chain_key(settings, key)
    data = {
        "endpoints": endpoints,
        "onchain_aggregate_key": None if key is None or key == NOT_SET else key.hex(),
        "not_set": reading.not_set,
        "disagree": reading.disagree,
    }
    up = sum(1 for e in endpoints if e["up"])
    summary = f"{up}/{len(endpoints)} endpoints up" + (
        ", endpoints disagree" if reading.disagree else ""
    )
    # Say why each endpoint is down: "0/1 endpoints up" alone sends the operator digging.
    down = [f"{e['endpoint']}: {e['error'] or 'no answer'}" for e in endpoints if not e["up"]]
    if down:
        summary += "; " + "; ".join(down)
    if reading.all_failed:
        return JobResult(JobOutcome.ERROR, summary, data)
    return JobResult(
        JobOutcome.PROBLEM if up < len(endpoints) or reading.disagree else JobOutcome.OK,
        summary,
        data,
    )


def remember_chain_key(settings: Settings, key: bytes) -> None:
    """The newest on-chain key seen is what retention protects (the newest backup holding
    its shares) and what verify calls current; verify records the keys it reads too."""
    with StateStore.open(settings.state_dir) as store:
        if store.last_event(EventKind.CHAIN_KEY, key.hex()) is None:
            store.record_event(EventKind.CHAIN_KEY, key.hex(), "seen")


def interruptible(func: Callable[[], T]) -> T:
    """Run a job body that leaves nothing to clean up in a daemon thread, so a SIGTERM stops
    the wait at once instead of after its slowest network read (a thread pool joins its
    threads on the way out). Not for backup or verify: they unwind in their own thread."""
    return InBackground(func, name="job").result()
