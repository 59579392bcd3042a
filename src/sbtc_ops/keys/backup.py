"""`key backup`: an offline cold copy of the signer key that never holds the key in clear.

Three methods:
- `age-passphrase`: age with an scrypt passphrase stanza (age's standard work factor,
  calibrated by the age library to about a second on this machine);
- `age-recipients`: age to one or more X25519 public keys (`age1…`) whose identities are
  kept offline, e.g. on hardware or paper;
- `slip39`: K-of-N SLIP-39 mnemonic shares, one file per share, for custodians who each
  hold one share (no single person can restore the key: the 4-eyes practice).

Every output names the public key and the creation time (a sidecar JSON for age files, `#`
header lines in share files). Files are 0600 in a 0700 directory, written atomically and
never over an existing file. The passphrase and share backups are read back from disk and
checked against the key before the command reports success.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyrage
import shamir_mnemonic

from sbtc_ops import __version__
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.keys.files import file_mode, prepare_private_dir, write_new_private_file
from sbtc_ops.keys.material import SignerKey, zero
from sbtc_ops.keys.restore import RestoreFailed, restore_age, restore_shares

Method = Literal["age-passphrase", "age-recipients", "slip39"]
FORMAT = "sbtc-ops/key-backup/v1"
MAX_SHARES = 16  # SLIP-39 encodes member counts in 4 bits
WORDS_PER_LINE = 11


@dataclass(frozen=True)
class BackupRequest:
    method: Method
    passphrase: str | None = None
    recipients: tuple[str, ...] = ()
    shares: int | None = None
    threshold: int | None = None

    def __repr__(self) -> str:  # never show the passphrase
        return f"BackupRequest(method={self.method!r})"


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    role: Literal["age", "sidecar", "share", "manifest"]
    mode: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "role": self.role, "mode": f"{self.mode:04o}"}


@dataclass
class BackupReport:
    method: Method
    public_key: str
    created_at: str
    out_dir: Path
    files: list[WrittenFile] = field(default_factory=list)
    read_back: bool = False
    threshold: int | None = None
    shares: int | None = None
    recipients: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "public_key": self.public_key,
            "created_at": self.created_at,
            "out_dir": str(self.out_dir),
            "files": [item.to_json() for item in self.files],
            "read_back_verified": self.read_back,
            "threshold": self.threshold,
            "shares": self.shares,
            "recipients": self.recipients,
            "notes": self.notes,
        }


def validate_request(request: BackupRequest) -> None:
    """Refuse bad parameters before any file is written."""
    if request.method == "age-recipients":
        if not request.recipients:
            raise UsageError("--recipient needs at least one age public key (age1…)")
        for recipient in request.recipients:
            _parse_recipient(recipient)
    if request.method == "slip39":
        shares, threshold = request.shares, request.threshold
        if shares is None or threshold is None:
            raise UsageError("SLIP-39 backups need both --shares N and --threshold K")
        if not 2 <= threshold <= shares <= MAX_SHARES:
            raise UsageError(
                f"--threshold {threshold} --shares {shares}: need 2 ≤ K ≤ N ≤ {MAX_SHARES} "
                "(one share alone must never restore the key)"
            )


def _parse_recipient(text: str) -> pyrage.x25519.Recipient:
    try:
        return pyrage.x25519.Recipient.from_str(text)
    except pyrage.RecipientError:
        raise UsageError(f"--recipient {text!r} is not an age X25519 public key (age1…)") from None


def create_backup(
    key: SignerKey, out_dir: Path, request: BackupRequest, now: dt.datetime | None = None
) -> BackupReport:
    validate_request(request)
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    report = BackupReport(
        method=request.method,
        public_key=key.public_key_hex,
        created_at=created.isoformat().replace("+00:00", "Z"),
        out_dir=out_dir,
    )
    prepare_private_dir(out_dir)
    stem = f"signer-key-{key.public_key_hex[:16]}-{created:%Y%m%dT%H%M%SZ}"
    if request.method == "slip39":
        _write_shares(key, out_dir, stem, request, report)
    else:
        _write_age(key, out_dir, stem, request, report)
    for written in report.files:
        if written.mode & 0o077:
            report.notes.append(
                f"{written.path} has mode {written.mode:04o}: this filesystem does not keep "
                "Unix permissions; keep the medium itself under lock"
            )
    return report


# -- age -----------------------------------------------------------------------------------


def _write_age(
    key: SignerKey, out_dir: Path, stem: str, request: BackupRequest, report: BackupReport
) -> None:
    plaintext = key.hex_text()
    try:
        if request.method == "age-passphrase":
            if not request.passphrase:
                raise UsageError("a passphrase is required")
            ciphertext = pyrage.passphrase.encrypt(bytes(plaintext), request.passphrase)
        else:
            recipients = [_parse_recipient(text) for text in request.recipients]
            ciphertext = pyrage.encrypt(bytes(plaintext), recipients)
            report.recipients = list(request.recipients)
    finally:
        zero(plaintext)
    age_path = out_dir / f"{stem}.age"
    sidecar = {
        "format": FORMAT,
        "method": request.method,
        "public_key": report.public_key,
        "created_at": report.created_at,
        "file": age_path.name,
        "sha256": hashlib.sha256(ciphertext).hexdigest(),
        "recipients": report.recipients,
        "restore": "age -d FILE prints the key in the signer's format (64 hex digits); "
        "sbtc-ops key verify-backup FILE proves it without printing it",
        "created_by": f"sbtc-ops {__version__}",
    }
    _write(age_path, ciphertext, "age", report)
    _write(age_path.with_name(age_path.name + ".json"), _json_bytes(sidecar), "sidecar", report)
    if request.method == "age-passphrase":
        _read_back(report, lambda: restore_age(age_path, passphrase=request.passphrase))
    else:
        report.notes.append(
            "recipient backups can only be verified where an identity is: run "
            "`sbtc-ops key verify-backup --identity IDENTITY_FILE FILE` there"
        )


# -- SLIP-39 -------------------------------------------------------------------------------


def _write_shares(
    key: SignerKey, out_dir: Path, stem: str, request: BackupRequest, report: BackupReport
) -> None:
    assert request.shares is not None and request.threshold is not None
    count, threshold = request.shares, request.threshold
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, count)], key.secret_bytes())
    mnemonics = groups[0]
    identifier = shamir_mnemonic.share.Share.from_mnemonic(mnemonics[0]).identifier
    report.shares, report.threshold = count, threshold
    paths = []
    for number, mnemonic in enumerate(mnemonics, start=1):
        path = out_dir / f"{stem}-share-{number}-of-{count}.txt"
        header = _share_header(report, number, count, threshold, identifier)
        _write(path, (header + _wrap_words(mnemonic)).encode("utf-8"), "share", report)
        paths.append(path)
    del mnemonics, groups
    manifest = {
        "format": FORMAT,
        "method": "slip39",
        "public_key": report.public_key,
        "created_at": report.created_at,
        "threshold": threshold,
        "shares": count,
        "share_set_id": identifier,
        "files": [path.name for path in paths],
        "restore": f"any {threshold} of the {count} share files restore the key "
        "(sbtc-ops key verify-backup FILE…, or any SLIP-39 tool: the secret is the "
        "32-byte key, no SLIP-39 passphrase)",
        "created_by": f"sbtc-ops {__version__}",
    }
    _write(out_dir / f"{stem}-shares.json", _json_bytes(manifest), "manifest", report)
    _read_back(report, lambda: restore_shares(paths))


def _share_header(
    report: BackupReport, number: int, count: int, threshold: int, identifier: int
) -> str:
    return (
        f"# sbtc-ops signer key backup: SLIP-39 share {number} of {count}; "
        f"any {threshold} shares restore the key, fewer reveal nothing.\n"
        f"# public-key: {report.public_key}\n"
        f"# created-at: {report.created_at}\n"
        f"# share-set-id: {identifier}\n"
        "# Keep this share apart from the others, offline. "
        "Check with: sbtc-ops key verify-backup SHARE_FILE…\n"
    )


def _wrap_words(mnemonic: str) -> str:
    words = mnemonic.split()
    lines = [
        " ".join(words[start : start + WORDS_PER_LINE])
        for start in range(0, len(words), WORDS_PER_LINE)
    ]
    return "\n".join(lines) + "\n"


# -- shared --------------------------------------------------------------------------------


def _write(path: Path, data: bytes, role: Any, report: BackupReport) -> None:
    write_new_private_file(path, data)
    report.files.append(WrittenFile(path, role, file_mode(path)))


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _read_back(report: BackupReport, restore: Any) -> None:
    """Restore what was just written, from disk, and require the same public key."""
    try:
        with restore() as restored:
            same = restored.public_key_hex == report.public_key
    except RestoreFailed as exc:
        raise SbtcOpsError(
            f"the backup just written does not restore: {exc.message}",
            hint="do not rely on these files; check the medium and run the backup again",
        ) from None
    if not same:
        raise SbtcOpsError(
            "the backup just written restores a different key",
            hint="do not rely on these files; report this as a bug",
        )
    report.read_back = True
