"""Attest a drill, verify attestations, co-sign one (four eyes).

- `attest_drill`: the statement of one drill, signed with `attest.signing_key` when set, added
  beside the backup in every configured location that holds it, and recorded in the state;
- `verify_target`: every statement of a backup (or one statement file): each signature checked
  against an allowed-signers file with ssh-keygen, the archive's digests recomputed from the
  repository, who signed what when;
- `cosign`: a second administrator's signature, as its own file.
"""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbtc_ops.attest import sshsig, statement, store
from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.storage import Storage, StorageError, StoredBackup
from sbtc_ops.errors import DependencyError, UsageError
from sbtc_ops.files import read_capped
from sbtc_ops.state import EventKind, StateStore

_unsigned_said = False
ANY_SIZE = 1 << 40  # archive files with no recorded size: hashed up to 1 TiB


@dataclass
class AttestOutcome:
    """What attest_drill did: JSON-ready for the verify report."""

    statement_sha256: str
    name: str
    signed: bool
    signer_key: str | None
    stored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "statement_sha256": self.statement_sha256,
            "name": self.name,
            "signed": self.signed,
            "signing_key": self.signer_key,
            "stored": self.stored,
            "problems": self.problems,
        }


def now_stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def host_name() -> str:
    return socket.gethostname()


def attest_drill(
    evidence: statement.DrillEvidence,
    storages: list[Storage],
    state_dir: Path,
    signing_key: Path | None,
) -> AttestOutcome:
    """Sign (when a key is configured) and store the statement of one drill. A failure to
    sign or store is reported in the outcome, never raised: the drill's verdict stands."""
    data = statement.canonical_bytes(statement.build(evidence))
    digest = statement.digest(data)
    name = f"drill-{now_stamp()}-{digest[:12]}{store.STATEMENT_SUFFIX}"
    outcome = AttestOutcome(digest, name, False, str(signing_key) if signing_key else None)
    signature = _sign_or_note(data, signing_key, outcome)
    holding = [
        s for s in storages if is_backup_id(evidence.backup_id) and _holds(s, evidence.backup_id)
    ]
    for storage in holding:
        try:
            outcome.stored.append(store.put(storage, evidence.backup_id, name, data))
            if signature is not None:
                store.put(storage, evidence.backup_id, f"{name}.sig", signature)
        except (StorageError, OSError, UsageError) as exc:
            outcome.problems.append(f"{storage.name}: {exc}")
    _record(state_dir, evidence, outcome)
    return outcome


def _sign_or_note(data: bytes, key: Path | None, outcome: AttestOutcome) -> bytes | None:
    global _unsigned_said
    if key is None:
        if not _unsigned_said:
            print(
                "note: drill attestations are unsigned (set attest.signing_key to sign them)",
                file=sys.stderr,
            )
            _unsigned_said = True
        return None
    try:
        signature = sshsig.sign(data, key)
    except (DependencyError, UsageError) as exc:
        outcome.problems.append(f"not signed: {exc.message}")
        return None
    outcome.signed = True
    return signature


def _holds(storage: Storage, backup_id: str) -> bool:
    try:
        return backup_id in storage.backup_ids()
    except StorageError:
        return False


def _record(state_dir: Path, evidence: statement.DrillEvidence, outcome: AttestOutcome) -> None:
    with StateStore.open(state_dir) as state:
        state.record_event(
            EventKind.ATTESTATION,
            evidence.backup_id,
            "signed" if outcome.signed else "unsigned",
            {**outcome.to_json(), "verdict": evidence.verdict},
        )


# -- verification ----------------------------------------------------------------------------


@dataclass
class SignatureReport:
    file: str
    valid: bool
    principals: list[str]
    key: str | None
    message: str


@dataclass
class StatementReport:
    name: str
    location: str
    sha256: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    signatures: list[SignatureReport] = field(default_factory=list)
    subjects_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return any(s.valid for s in self.signatures)

    @property
    def tampered(self) -> bool:
        return bool(self.problems) or any(not s.valid for s in self.signatures)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "location": self.location,
            "statement_sha256": self.sha256,
            **self.summary,
            "signed": self.signed,
            "signers": sorted({p for s in self.signatures if s.valid for p in s.principals}),
            "signatures": [s.__dict__ for s in self.signatures],
            "subjects_match": self.subjects_ok,
            "problems": self.problems,
        }


@dataclass
class VerifyAttestationsReport:
    target: str
    statements: list[StatementReport]

    @property
    def ok(self) -> bool:
        return bool(self.statements) and all(s.signed and not s.tampered for s in self.statements)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "statements": [s.to_json() for s in self.statements],
        }


def verify_target(
    target: str, allowed_signers: Path, storages: list[Storage]
) -> VerifyAttestationsReport:
    if not allowed_signers.is_file():
        raise UsageError(f"allowed-signers file {allowed_signers} does not exist")
    sshsig.ssh_keygen()
    path = Path(target)
    if path.is_file():
        located = store.local_backup_of(path)
        if located is None:
            raise UsageError(
                f"{path} is not inside a backup's attestations/ directory: the archive's "
                "digests cannot be recomputed from the repository"
            )
        local, backup_id = located
        return VerifyAttestationsReport(
            target, [_check_statement(local, backup_id, path.name, allowed_signers)]
        )
    if not is_backup_id(target):
        raise UsageError(f"{target!r} is neither a statement file nor a backup id")
    reports: list[StatementReport] = []
    for storage in storages:
        if not _holds(storage, target):
            continue
        listed = store.names(storage, target)
        for name in (n for n in listed if n.endswith(store.STATEMENT_SUFFIX)):
            reports.append(_check_statement(storage, target, name, allowed_signers, listed))
    return VerifyAttestationsReport(target, reports)


def _check_statement(
    storage: Storage,
    backup_id: str,
    name: str,
    allowed: Path,
    listed: list[str] | None = None,
) -> StatementReport:
    report = StatementReport(name, f"{storage.name}/{backup_id}", None)
    try:
        data = store.read(storage, backup_id, name, statement.MAX_STATEMENT_BYTES)
        parsed = statement.parse(data)
    except (StorageError, OSError, UsageError, statement.StatementError) as exc:
        report.problems.append(f"statement unreadable: {exc}")
        return report
    report.sha256 = statement.digest(data)
    report.summary = statement.summary(parsed)
    listed = listed if listed is not None else store.names(storage, backup_id)
    for sig_name in (n for n in listed if n.startswith(name) and n.endswith(".sig")):
        signature = store.read(storage, backup_id, sig_name, sshsig.MAX_SIGNATURE_BYTES)
        check = sshsig.check(data, signature, allowed)
        report.signatures.append(
            SignatureReport(sig_name, check.valid, list(check.principals), check.key, check.message)
        )
    report.subjects_ok = _subjects_match(storage, backup_id, parsed, report.problems)
    return report


def _subjects_match(
    storage: Storage, backup_id: str, parsed: dict[str, Any], problems: list[str]
) -> bool:
    sizes = _manifest_sizes(storage, backup_id)
    ok = True
    for subject in statement.subjects(parsed):
        try:
            actual = store.file_digest(
                storage, backup_id, subject.name, sizes.get(subject.name, ANY_SIZE)
            )
        except (UsageError, ValueError) as exc:
            actual = None
            problems.append(f"{subject.name}: {exc}")
        if actual != subject.sha256:
            ok = False
            problems.append(
                f"{subject.name}: the repository's file "
                + ("is missing" if actual is None else f"has SHA-256 {actual}")
                + f", the statement says {subject.sha256}"
            )
    return ok


def _manifest_sizes(storage: Storage, backup_id: str) -> dict[str, int]:
    try:
        manifest = storage.read_manifest(backup_id)
    except Exception:  # noqa: BLE001  (no manifest: sizes are capped by ANY_SIZE)
        return {}
    return {entry.path: entry.size for entry in manifest.files}


# -- co-signing ----------------------------------------------------------------------------


def cosign(target: Path, key: Path) -> str:
    """Add a signature by `key` to the statement file `target` (a new file beside it)."""
    located = store.local_backup_of(target)
    if (
        located is None
        or not store.valid_name(target.name)
        or not target.name.endswith(store.STATEMENT_SUFFIX)
    ):
        raise UsageError(f"{target} is not a drill statement inside a backup's attestations/")
    data = read_capped(target, statement.MAX_STATEMENT_BYTES)
    try:
        statement.parse(data)
    except statement.StatementError as exc:
        raise UsageError(f"{target}: {exc}") from None
    signature = sshsig.sign(data, key)
    storage, backup_id = located
    name = f"{target.name}.cosig-{now_stamp()}-{secrets.token_hex(4)}.sig"
    return store.put(storage, backup_id, name, signature)


def record_cosignature(state_dir: Path, backup_id: str, statement_name: str, where: str) -> None:
    """Remember a co-signature made on this host (the status page and metrics count it)."""
    with StateStore.open(state_dir) as state:
        state.record_event(
            EventKind.ATTESTATION, backup_id, "cosigned", {"name": statement_name, "file": where}
        )


# -- per-backup evidence (backups, status, audit) ------------------------------------------------


@dataclass(frozen=True)
class BackupEvidence:
    """Whether a backup has a signed drill that proved it (`match`), and how many signatures
    that drill's statement carries. With an allowed-signers file, signatures are verified
    (ssh-keygen) and only allowed ones count; without, this host's own record counts."""

    signed_match: bool
    signatures: int
    statement: str | None
    checked_against: str | None  # the allowed-signers file, when signatures were verified

    def to_json(self) -> dict[str, Any]:
        return {
            "signed_match": self.signed_match,
            "signatures": self.signatures,
            "statement": self.statement,
            "verified_with": self.checked_against,
        }


NO_EVIDENCE = BackupEvidence(False, 0, None, None)


def evidence_reader(
    state_dir: Path, allowed: Path | None
) -> Callable[[Storage, StoredBackup], dict[str, Any]]:
    """For backup.service.survey: whether a signed drill proved each backup, and its
    signatures (an incomplete backup has none)."""

    def read(storage: Storage, backup: StoredBackup) -> dict[str, Any]:
        if not backup.complete:
            return NO_EVIDENCE.to_json()
        return backup_evidence(storage, backup.id, state_dir, allowed).to_json()

    return read


def backup_evidence(
    storage: Storage, backup_id: str, state_dir: Path, allowed: Path | None
) -> BackupEvidence:
    try:
        listed = store.names(storage, backup_id)
    except (StorageError, UsageError, OSError):
        return NO_EVIDENCE
    if allowed is not None and allowed.is_file():
        return _verified_evidence(storage, backup_id, listed, allowed)
    with StateStore.open(state_dir) as state:
        events = state.events(EventKind.ATTESTATION, backup_id, limit=50)
    for event in events:
        name = str(event.data.get("name", ""))
        if event.outcome == "signed" and event.data.get("verdict") == "match" and name in listed:
            count = sum(1 for n in listed if n.startswith(name) and n.endswith(".sig"))
            return BackupEvidence(True, count, name, None)
    return NO_EVIDENCE


def _verified_evidence(
    storage: Storage, backup_id: str, listed: list[str], allowed: Path
) -> BackupEvidence:
    statements = sorted((n for n in listed if n.endswith(store.STATEMENT_SUFFIX)), reverse=True)
    for name in statements:
        report = _check_statement(storage, backup_id, name, allowed, listed)
        if report.summary.get("verdict") != "match" or report.tampered or not report.signed:
            continue
        valid = sum(1 for s in report.signatures if s.valid)
        return BackupEvidence(True, valid, name, str(allowed))
    return BackupEvidence(False, 0, None, str(allowed))


def signing_configured(signing_key: Path | None, allowed: Path | None) -> bool:
    return signing_key is not None or allowed is not None
