"""Prometheus metrics read from the state database by a custom collector: a scrape reads
what jobs recorded, it never runs one. The same registry is written to a node_exporter
textfile for timer/cron deployments (`--metrics-textfile`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sbtc_ops import __version__
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.redact import scrub
from sbtc_ops.serve.signermetrics import signer_metrics
from sbtc_ops.serve.snapshot import BACKUP_KINDS, KeyState, Snapshot, read_snapshot
from sbtc_ops.verify.checks import Verdict

PREFIX = "sbtc_ops"


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        family = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
        family.add_metric([], value)
        yield family


class StateCollector(Collector):
    """Every metric comes from one snapshot of the state database."""

    def __init__(
        self,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
        more_metrics: Callable[[Snapshot], Iterator[Metric]] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.more_metrics = more_metrics

    def collect(self) -> Iterator[Metric]:
        snap = read_snapshot(self.state_dir, self.clock())
        info = InfoMetricFamily(f"{PREFIX}_build", "sbtc-ops version and Python runtime.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        yield from _backup_metrics(snap)
        yield from _verify_metrics(snap)
        yield from _attestation_metrics(snap)
        yield from _key_metrics(snap)
        yield from _chain_metrics(snap)
        yield from _audit_metrics(snap)
        yield from _job_metrics(snap)
        yield from _dkg_metrics(snap)
        yield from signer_metrics(snap)
        if self.more_metrics is not None:
            yield from self.more_metrics(snap)


# Every backup series carries kind="full" or kind="dkg-only": an 88 KiB DKG export must
# neither dip the size panel nor satisfy the backup-age alert (the rules select kind="full").
_BACKUP_SERIES = (
    ("last_backup_success", "1 if the latest backup attempt of this kind succeeded, else 0."),
    (
        "last_backup_success_timestamp_seconds",
        "When the last successful backup of this kind ended.",
    ),
    ("last_backup_success_age_seconds", "Seconds since the last successful backup of this kind."),
    ("last_backup_duration_seconds", "Duration of the last successful backup of this kind."),
    ("last_backup_size_bytes", "Size of the last successful backup of this kind."),
)


def _backup_metrics(snap: Snapshot) -> Iterator[Metric]:
    families = {
        name: GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["kind"])
        for name, doc in _BACKUP_SERIES
    }
    for kind in BACKUP_KINDS:
        for name, value in _backup_values(snap, kind).items():
            families[name].add_metric([kind], value)
    yield from (family for family in families.values() if family.samples)


def _backup_values(snap: Snapshot, kind: str) -> dict[str, float]:
    last = snap.last_of(kind)
    ok = snap.last_of(kind, ok=True)
    values: dict[str, float] = {}
    if last is not None:
        values["last_backup_success"] = 1.0 if last.outcome == "ok" else 0.0
    if ok is not None:
        values["last_backup_success_timestamp_seconds"] = ok.at
        values["last_backup_success_age_seconds"] = max(0.0, snap.now - ok.at)
        values["last_backup_duration_seconds"] = float(ok.data.get("duration_s") or 0.0)
        values["last_backup_size_bytes"] = float(ok.data.get("size") or 0)
    return values


def _verify_metrics(snap: Snapshot) -> Iterator[Metric]:
    last = snap.last_verify
    if last is None:
        return
    yield from _gauge("last_verify_timestamp_seconds", "When the last verify ended.", last.at)
    yield from _gauge(
        "last_verify_success",
        "1 if the last verify passed every check with a matching key, else 0.",
        1.0 if last.outcome == "ok" else 0.0,
    )
    verdict = GaugeMetricFamily(
        f"{PREFIX}_last_verify_verdict",
        "The last verify's verdict (1 for the current one).",
        labels=["verdict"],
    )
    current = snap.last_verdict
    for name in Verdict:
        verdict.add_metric([name.value], 1.0 if name == current else 0.0)
    yield verdict
    ok = snap.last_verify_ok
    if ok is not None:
        yield from _gauge(
            "last_verify_success_timestamp_seconds", "When the last successful verify ended.", ok.at
        )
        yield from _gauge(
            "last_verify_success_age_seconds",
            "Seconds since the last successful verify.",
            max(0.0, snap.now - ok.at),
        )


def _attestation_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Per existing backup: whether a signed drill proved it, and its signatures."""
    backups = [e.subject for e in snap.existing_backups if e.outcome == "ok"]
    if not backups:
        return
    signed = GaugeMetricFamily(
        f"{PREFIX}_backup_signed_drill",
        "1 if a drill with verdict match left a signed attestation for this backup, else 0.",
        labels=["backup"],
    )
    signatures = GaugeMetricFamily(
        f"{PREFIX}_backup_attestation_signatures",
        "Signatures on this backup's newest drill attestation (its own and co-signatures "
        "recorded on this host).",
        labels=["backup"],
    )
    for backup_id in dict.fromkeys(backups):
        signed.add_metric([backup_id], 1.0 if snap.signed_match(backup_id) else 0.0)
        attestation = snap.attestation_of(backup_id)
        count = snap.signatures_of(attestation) if attestation is not None else 0
        signatures.add_metric([backup_id], float(count))
    yield signed
    yield signatures


def _key_metrics(snap: Snapshot) -> Iterator[Metric]:
    state = snap.key_state
    yield from _gauge(
        "aggregate_key_match",
        "1 if the newest verified key in the backups is the on-chain aggregate key, else 0.",
        1.0 if state == KeyState.MATCH else 0.0,
    )
    family = GaugeMetricFamily(
        f"{PREFIX}_aggregate_key_state",
        "Backed-up key versus chain: match, stale (predates a rotation), mismatch, unknown.",
        labels=["state"],
    )
    for name in KeyState:
        family.add_metric([name.value], 1.0 if name == state else 0.0)
    yield family


def _chain_metrics(snap: Snapshot) -> Iterator[Metric]:
    if snap.chain is None:
        return
    up = GaugeMetricFamily(
        f"{PREFIX}_chain_endpoint_up",
        "1 if the Stacks endpoint answered the last registry read.",
        labels=["endpoint"],
    )
    for endpoint in snap.endpoints:
        up.add_metric([str(endpoint["endpoint"])], 1.0 if endpoint.get("up") else 0.0)
    yield up
    yield from _gauge(
        "chain_check_timestamp_seconds",
        "When the on-chain key was last read.",
        snap.chain.ended_at or snap.chain.started_at,
    )


def _audit_metrics(snap: Snapshot) -> Iterator[Metric]:
    if snap.audit is None:
        return
    score = snap.audit_score
    if score is not None:
        yield from _gauge("audit_score", "Audit hardening score, 0-100.", float(score))
    yield from _gauge("audit_timestamp_seconds", "When the last audit ran.", snap.audit.at)
    findings = GaugeMetricFamily(
        f"{PREFIX}_audit_findings",
        "Open audit findings (warn, fail, error) by area, severity and status.",
        labels=["area", "severity", "status"],
    )
    counts: dict[tuple[str, str, str], int] = {}
    for finding in snap.open_findings:
        key = (str(finding["area"]), str(finding["severity"]), str(finding["status"]))
        counts[key] = counts.get(key, 0) + 1
    for (area, severity, status), count in sorted(counts.items()):
        findings.add_metric([area, severity, status], float(count))
    yield findings


def _dkg_metrics(snap: Snapshot) -> Iterator[Metric]:
    up = snap.dkg_watch_up
    if up is None:
        return  # no DKG watch here
    yield from _gauge(
        "dkg_watch_up", "1 if the DKG watch's last poll of the signer DB succeeded.", float(up)
    )
    yield from _gauge(
        "dkg_unprotected_seconds",
        "Seconds the newest DKG shares have existed without a backup containing them (0: safe).",
        snap.dkg_unprotected_s,
    )


def _job_metrics(snap: Snapshot) -> Iterator[Metric]:
    runs = CounterMetricFamily(
        f"{PREFIX}_job_runs",
        "Job runs by task (the sbtc-ops job: backup, verify, …) and outcome.",
        labels=["task", "outcome"],
    )
    for (job, outcome), count in sorted(snap.run_counts.items()):
        if outcome != "running":
            runs.add_metric([job, outcome], float(count))
    yield runs
    running = GaugeMetricFamily(
        f"{PREFIX}_job_running", "1 while a run of the job is in progress.", labels=["task"]
    )
    last = GaugeMetricFamily(
        f"{PREFIX}_job_last_run_timestamp_seconds",
        "When the job's last finished run ended.",
        labels=["task"],
    )
    last_ok = GaugeMetricFamily(
        f"{PREFIX}_job_last_run_success",
        "1 if the job's last finished run succeeded.",
        labels=["task"],
    )
    for job in sorted(set(snap.last_runs) | set(snap.running)):
        running.add_metric([job], 1.0 if job in snap.running else 0.0)
        run = snap.last_runs.get(job)
        if run is not None:
            last.add_metric([job], run.ended_at or run.started_at)
            last_ok.add_metric([job], 1.0 if run.outcome == "ok" else 0.0)
    yield running
    yield last
    yield last_ok


def registry_for(
    state_dir: Path,
    clock: Callable[[], float] = time.time,
    more_metrics: Callable[[Snapshot], Iterator[Metric]] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state_dir, clock, more_metrics))
    return registry


class CachedExposition:
    """The exposition text, rebuilt at most once per `max_age_s` by a background thread while
    scrapers get the previous text: fifty scrapers at once cost one read of the database, and
    none waits for it. Ages move by at most about `max_age_s` between rebuilds."""

    def __init__(self, registry: CollectorRegistry, max_age_s: float = 1.0) -> None:
        self.registry = registry
        self.max_age_s = max_age_s
        self._body: bytes | None = None
        self._built = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            body = self._body
            stale = time.monotonic() - self._built >= self.max_age_s
            start_refresh = stale and body is not None and not self._refreshing
            if start_refresh:
                self._refreshing = True
        if body is None:
            return self._rebuild()
        if start_refresh:
            threading.Thread(target=self._rebuild, name="metrics", daemon=True).start()
        return body

    def _rebuild(self) -> bytes:
        try:
            body = exposition(self.registry)
        finally:
            with self._lock:
                self._refreshing = False
        with self._lock:
            self._body = body
            self._built = time.monotonic()
        return body


def exposition(registry: CollectorRegistry) -> bytes:
    """The exposition text, scrubbed: label values come from recorded history."""
    return scrub(generate_latest(registry).decode()).encode()


def write_textfile(path: Path, state_dir: Path) -> None:
    """Write the metrics for node_exporter's textfile collector atomically (temp + rename)."""
    text = exposition(registry_for(state_dir))
    directory = path.parent
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
        temp.chmod(0o644)  # node_exporter reads it; it holds no secret
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def write_textfile_for_cli(path: Path, load_settings: Callable[[], Any]) -> None:
    """What `--metrics-textfile` does after a command; raises SbtcOpsError with the reason."""
    settings = load_settings()
    try:
        write_textfile(path, settings.state_dir)
    except OSError as exc:
        raise SbtcOpsError(
            f"cannot write the metrics textfile {path}: {exc.strerror or exc}",
            hint="node_exporter's textfile directory must exist and be writable by this user",
        ) from None
