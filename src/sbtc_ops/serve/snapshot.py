"""What the state database says right now, read once and shared by the metrics, the status
page and `history`. Reading never runs a job.

Verdicts (green/amber/red) follow the shipped alert rules: a backup older than 26 h, no
successful verify in 8 days, a failed verify, a stale or mismatched key, an endpoint down,
failing audit findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sbtc_ops.history import JobOutcome
from sbtc_ops.results import Status
from sbtc_ops.serve.dkgwatch import unprotected_seconds
from sbtc_ops.state import Event, EventKind, Run, StateStore
from sbtc_ops.verify.checks import Verdict as VerifyVerdict

BACKUP_MAX_AGE_S = 26 * 3600
VERIFY_MAX_AGE_S = 8 * 86400
DKG_MAX_UNPROTECTED_S = 15 * 60
# Every list of verdicts, outcomes, key states or colours is its one enum (a value added there,
# e.g. a new verify verdict, is exported and shown without touching this module).


class KeyState(StrEnum):
    """The backed-up aggregate key versus the chain's (the Aggregate key tile, the metric)."""

    MATCH = "match"
    STALE = "stale"  # predates a rotation: back up now
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"


class Colour(StrEnum):
    """A status-page tile's colour, in rising order of concern."""

    GREEN = "green"
    AMBER = "amber"
    RED = "red"

    @property
    def rank(self) -> int:
        return list(Colour).index(self)


FULL = "full"
DKG_ONLY = "dkg-only"
BACKUP_KINDS = (FULL, DKG_ONLY)


def backup_kind(event: Event) -> str:
    """A backup event's kind; failed attempts and records older than the kind say "full"
    unless they name it."""
    return DKG_ONLY if event.data.get("kind") == DKG_ONLY else FULL


@dataclass(frozen=True)
class Tile:
    """One area's health on the status page (not a verify verdict: verify.checks.Verdict)."""

    name: str
    colour: Colour
    detail: str


@dataclass
class Snapshot:
    now: float
    backups: list[Event] = field(default_factory=list)  # newest first
    verifies: list[Event] = field(default_factory=list)
    chain: Run | None = None
    audit: Event | None = None
    audit_run: Run | None = None
    run_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    last_runs: dict[str, Run] = field(default_factory=dict)
    running: list[str] = field(default_factory=list)
    dkg_watch: Event | None = None  # the newest watch event that saw dkg_shares
    dkg_watch_last: Event | None = None  # the newest watch event (may be an error)
    deleted: set[str] = field(default_factory=set)  # backup ids prune has deleted
    attestations: list[Event] = field(default_factory=list)  # newest first

    @property
    def existing_backups(self) -> list[Event]:
        """Backup runs whose backup has not been pruned since (failed attempts included)."""
        return [e for e in self.backups if e.subject not in self.deleted]

    # -- backups ----------------------------------------------------------------------------

    # Full backups and DKG-only exports are different kinds: an 88 KiB export is never "the
    # latest backup" (size, duration, age, the Backups tile); its own series carry kind=.
    def backups_of(self, kind: str) -> list[Event]:
        return [e for e in self.backups if backup_kind(e) == kind]

    def last_of(self, kind: str, *, ok: bool = False) -> Event | None:
        return next((e for e in self.backups_of(kind) if not ok or e.outcome == "ok"), None)

    @property
    def last_backup(self) -> Event | None:
        """The newest full backup attempt."""
        return self.last_of(FULL)

    @property
    def last_backup_ok(self) -> Event | None:
        """The newest successful full backup."""
        return self.last_of(FULL, ok=True)

    @property
    def full_backups_ok(self) -> list[Event]:
        return [e for e in self.backups_of(FULL) if e.outcome == "ok"]

    # -- verification -----------------------------------------------------------------------

    @property
    def last_verify(self) -> Event | None:
        return self.verifies[0] if self.verifies else None

    @property
    def last_verify_ok(self) -> Event | None:
        return next((e for e in self.verifies if e.outcome == "ok"), None)

    @property
    def last_verdict(self) -> str | None:
        verify = self.last_verify
        return None if verify is None else str(verify.data.get("verdict") or verify.outcome)

    # -- attestations (docs/attestations.md) ----------------------------------------------

    def attestation_of(self, backup_id: str) -> Event | None:
        """The newest drill attestation of a backup (its own, not a co-signature)."""
        return next(
            (e for e in self.attestations if e.subject == backup_id and e.outcome != "cosigned"),
            None,
        )

    def signatures_of(self, attestation: Event) -> int:
        """The drill's own signature plus the co-signatures recorded on this host."""
        name = attestation.data.get("name")
        cosigned = sum(
            1 for e in self.attestations if e.outcome == "cosigned" and e.data.get("name") == name
        )
        return (1 if attestation.outcome == "signed" else 0) + cosigned

    def signed_match(self, backup_id: str) -> bool:
        """A signed drill proved this backup (verdict match)."""
        return any(
            e.subject == backup_id and e.outcome == "signed" and e.data.get("verdict") == "match"
            for e in self.attestations
        )

    # -- keys and chain ---------------------------------------------------------------------

    @property
    def chain_key(self) -> str | None:
        return None if self.chain is None else self.chain.data.get("onchain_aggregate_key")

    @property
    def key_state(self) -> KeyState:
        """match / stale / mismatch by the last verify that read the chain, re-judged against a
        newer chain read: a rotation after that verify makes the backed-up key stale until a
        backup has it. A verify against a key typed with --expected-key says nothing here."""
        last = next((e for e in self.verifies if not e.data.get("expected_aggregate_key")), None)
        verdict = None if last is None else str(last.data.get("verdict") or last.outcome)
        if verdict == VerifyVerdict.STALE:
            return KeyState.STALE
        if verdict == VerifyVerdict.MISMATCH:
            return KeyState.MISMATCH
        if verdict != VerifyVerdict.MATCH or last is None:
            return KeyState.UNKNOWN
        verified = last.data.get("onchain_aggregate_key")
        chain = self.chain_key
        if chain is None or chain == verified:
            return KeyState.MATCH
        # The newest backup of either kind holding the key protects it (a DKG export does).
        newest = next((e for e in self.backups if e.outcome == "ok"), None)
        if newest is not None and newest.data.get("newest_verified_aggregate_key") == chain:
            return KeyState.MATCH
        return KeyState.STALE

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        if self.chain is None:
            return []
        return list(self.chain.data.get("endpoints", []))

    # -- audit ------------------------------------------------------------------------------

    @property
    def audit_score(self) -> int | None:
        return None if self.audit is None else self.audit.data.get("score")

    @property
    def open_findings(self) -> list[dict[str, Any]]:
        if self.audit is None:
            return []
        findings = list(self.audit.data.get("findings", []))
        order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
        return sorted(findings, key=lambda f: (order.get(f.get("severity", ""), 9), f["id"]))

    # -- DKG shares ---------------------------------------------------------------------------

    @property
    def dkg_unprotected_s(self) -> float | None:
        return unprotected_seconds(self.dkg_watch, self.backups, self.now)

    @property
    def dkg_watch_up(self) -> bool | None:
        last = self.dkg_watch_last
        return None if last is None else last.outcome == "ok"

    # -- verdicts ---------------------------------------------------------------------------

    def tiles(self) -> list[Tile]:
        tiles = [
            self._backup_verdict(),
            self._verify_verdict(),
            self._key_verdict(),
            self._endpoint_verdict(),
            self._audit_verdict(),
        ]
        if self.dkg_watch_last is not None:
            tiles.append(self._dkg_verdict())
        tiles.append(self._jobs_verdict())
        return tiles

    def overall(self) -> Colour:
        return max((tile.colour for tile in self.tiles()), key=lambda colour: colour.rank)

    def _backup_verdict(self) -> Tile:
        ok = self.last_backup_ok
        if ok is None:
            return Tile("Backups", Colour.RED, "no successful backup recorded")
        age = self.now - ok.at
        text = f"last successful backup {ok.subject}, {human_age(age)} ago"
        if age > BACKUP_MAX_AGE_S:
            return Tile("Backups", Colour.RED, text + " (older than 26 h)")
        last = self.last_backup
        if last is not None and last.outcome != "ok":
            error = str(last.data.get("error") or "no reason recorded")
            return Tile("Backups", Colour.AMBER, f"{text}; the latest attempt failed: {error}")
        return Tile("Backups", Colour.GREEN, text)

    def _verify_verdict(self) -> Tile:
        last = self.last_verify
        if last is None:
            return Tile("Verification", Colour.AMBER, "no backup verified yet")
        if last.outcome != "ok":
            failed = ", ".join(last.data.get("failed_checks") or []) or "no check named"
            return Tile(
                "Verification",
                Colour.RED,
                f"last verify of {last.subject}: {self.last_verdict} (not passed: {failed})",
            )
        age = self.now - last.at
        if age > VERIFY_MAX_AGE_S:
            return Tile("Verification", Colour.RED, f"no successful verify for {human_age(age)}")
        attestation = self.attestation_of(last.subject)
        signed = (
            f"; attestation signed ({self.signatures_of(attestation)} signature(s))"
            if attestation is not None and attestation.outcome == "signed"
            else "; attestation unsigned"
        )
        return Tile(
            "Verification", Colour.GREEN, f"{last.subject} verified {human_age(age)} ago{signed}"
        )

    def _key_verdict(self) -> Tile:
        state = self.key_state
        details = {
            KeyState.MATCH: (Colour.GREEN, "the backed-up key is the on-chain aggregate key"),
            KeyState.STALE: (
                Colour.AMBER,
                "the newest backed-up key predates the on-chain key: back up now",
            ),
            KeyState.MISMATCH: (Colour.RED, "the backed-up key is not the on-chain key"),
            KeyState.UNKNOWN: (Colour.AMBER, "not compared yet"),
        }
        colour, detail = details[state]
        return Tile("Aggregate key", colour, detail)

    def _endpoint_verdict(self) -> Tile:
        endpoints = self.endpoints
        if not endpoints:
            return Tile("Chain endpoints", Colour.AMBER, "not checked yet")
        down = [
            f"{e['endpoint']} ({e['error']})" if e.get("error") else str(e["endpoint"])
            for e in endpoints
            if not e.get("up")
        ]
        if not down:
            return Tile("Chain endpoints", Colour.GREEN, f"{len(endpoints)} up")
        colour = Colour.RED if len(down) == len(endpoints) else Colour.AMBER
        return Tile("Chain endpoints", colour, "down: " + ", ".join(down))

    def _audit_verdict(self) -> Tile:
        if self.audit is None:
            return Tile("Audit", Colour.AMBER, "not run yet")
        findings = self.open_findings
        failing = [f for f in findings if f.get("status") in (Status.FAIL, Status.ERROR)]
        text = f"score {self.audit_score}, {len(findings)} open findings"
        if failing:
            first = failing[0]
            worst = f"{first.get('id')} {first.get('title') or first.get('detail') or ''}"
            return Tile("Audit", Colour.RED, f"{text}; worst: {worst.strip()}")
        return Tile("Audit", Colour.AMBER if findings else Colour.GREEN, text)

    def _dkg_verdict(self) -> Tile:
        seconds = self.dkg_unprotected_s
        if self.dkg_watch_up is False:
            error = self.dkg_watch_last.data.get("error") if self.dkg_watch_last else None
            return Tile("DKG shares", Colour.AMBER, f"the watch cannot read the signer DB: {error}")
        if seconds is None:
            return Tile("DKG shares", Colour.AMBER, "not observed yet")
        if seconds == 0:
            return Tile("DKG shares", Colour.GREEN, "the newest DKG shares are in a backup")
        colour = Colour.RED if seconds > DKG_MAX_UNPROTECTED_S else Colour.AMBER
        return Tile(
            "DKG shares", colour, f"the newest DKG shares are in no backup for {human_age(seconds)}"
        )

    def _jobs_verdict(self) -> Tile:
        """Every job whose last run did not end ok, with the run's own reason (a signer-check
        "problem" is otherwise a word without a why)."""
        failing = [
            f"{job}: {run.outcome} — {run.data.get('summary') or 'no reason recorded'}"
            for job, run in sorted(self.last_runs.items())
            if run.outcome != "ok"
        ]
        if not failing:
            return Tile("Jobs", Colour.GREEN, "every job's last run ended ok")
        # Amber: the tiles above judge backups, verification and the key; this one says why.
        return Tile("Jobs", Colour.AMBER, "; ".join(failing))


def read_snapshot(state_dir: Path, now: float, history: int = 90) -> Snapshot:
    with StateStore.open(state_dir) as store:
        snap = Snapshot(now=now)
        snap.backups = store.events(EventKind.BACKUP, limit=history)
        snap.verifies = store.events(EventKind.VERIFY, limit=history)
        snap.deleted = {
            e.subject for e in store.events(EventKind.BACKUP_DELETED, limit=10 * history)
        }
        snap.attestations = store.events(EventKind.ATTESTATION, limit=10 * history)
        snap.chain = store.last_run(
            "chain-check", (JobOutcome.OK, JobOutcome.PROBLEM, JobOutcome.ERROR)
        )
        snap.audit = store.last_event(EventKind.AUDIT)
        snap.audit_run = store.last_run("audit", (JobOutcome.OK, JobOutcome.PROBLEM))
        snap.run_counts = store.run_counts()
        jobs = {job for job, _ in snap.run_counts}
        for job in jobs:
            run = store.last_run(job, tuple(JobOutcome))
            if run is not None:
                snap.last_runs[job] = run
        snap.running = store.running_jobs()
        watch_events = store.events(EventKind.DKG_WATCH, "live", limit=20)
        snap.dkg_watch_last = watch_events[0] if watch_events else None
        snap.dkg_watch = next((e for e in watch_events if "row" in e.data), None)
        return snap


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
