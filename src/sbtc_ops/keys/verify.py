"""`key verify-backup`: prove that a cold backup restores the signer's key, without showing it.

The files are grouped into backups (each age file is one; all SLIP-39 share files together
are one), each is restored in memory, its public key compared with the signer's, and the
outcome recorded in the state store (`key-backup-verify`, subject = the signer's public
key) so `key check` can tell how long ago the backup was last proven.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyrage

from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError, DependencyError, SbtcOpsError, UsageError
from sbtc_ops.keys.chain import OnchainSignerSet
from sbtc_ops.keys.locate import locate_signer_key
from sbtc_ops.keys.material import SignerKey
from sbtc_ops.keys.restore import RestoreFailed, classify, restore_age, restore_shares
from sbtc_ops.state import EventKind, StateStore

_PUBLIC_KEY_HEX_LENGTH = 66


@dataclass(frozen=True)
class Expected:
    """What a restored key must match: one public key, or membership of the on-chain set."""

    basis: str
    public_key: str | None = None
    onchain: OnchainSignerSet | None = None

    def matches(self, public_key: str) -> bool:
        if self.public_key is not None:
            return public_key == self.public_key
        return self.onchain is not None and self.onchain.contains(public_key)

    def to_json(self) -> dict[str, Any]:
        return {"basis": self.basis, "public_key": self.public_key}


@dataclass
class BackupVerdict:
    method: str
    files: list[Path]
    outcome: str  # "ok", "mismatch", or a RestoreFailed outcome
    detail: str
    public_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "files": [str(path) for path in self.files],
            "outcome": self.outcome,
            "ok": self.ok,
            "detail": self.detail,
            "public_key": self.public_key,
        }


@dataclass
class VerifyReport:
    expected: Expected
    verdicts: list[BackupVerdict] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(verdict.ok for verdict in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "expected": self.expected.to_json(),
            "backups": [verdict.to_json() for verdict in self.verdicts],
            "skipped": [str(path) for path in self.skipped],
        }


# -- what to compare with ----------------------------------------------------------------------


def expected_public_key(
    settings: Settings,
    *,
    override: str | None,
    key_file: Path | None,
    onchain_reader: Callable[[], OnchainSignerSet] | None,
) -> Expected:
    """The signer's public key: --public-key, signer.public_key, the configured private key's,
    or, when none is known here, any key of the on-chain signer set."""
    if override:
        return Expected("--public-key", _valid_public_key(override, "--public-key"))
    configured = settings.signer.public_key
    derived = _configured_key_public(settings, key_file)
    if configured:
        configured = _valid_public_key(configured, "signer.public_key")
        if derived is not None and derived != configured:
            raise ConfigError(
                "signer.public_key does not match the public key of the configured private key",
                hint="run `sbtc-ops key check` and fix the configuration first",
            )
        return Expected("signer.public_key", configured)
    if derived is not None:
        return Expected("the configured private key", derived)
    if onchain_reader is None:
        raise UsageError(
            "no public key to compare with: signer.public_key is not set, no private key is "
            "configured, and --offline forbids asking the chain",
            hint="pass --public-key HEX (the signer's compressed public key)",
        )
    onchain = onchain_reader()
    if not onchain.signer_set:
        raise DependencyError(
            "no public key to compare with and no on-chain signer set to fall back on: "
            + ("; ".join(onchain.errors) or "the registry has no signer set yet"),
            hint="pass --public-key HEX (the signer's compressed public key)",
        )
    return Expected("the on-chain signer set", None, onchain)


def _configured_key_public(settings: Settings, key_file: Path | None) -> str | None:
    if settings.signer.private_key is None and settings.signer.key_file is None and not key_file:
        return None
    with locate_signer_key(settings, key_file=key_file) as key:
        return key.public_key_hex


def _valid_public_key(text: str, where: str) -> str:
    value = text.strip().lower()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(value) != _PUBLIC_KEY_HEX_LENGTH or len(raw) != 33 or raw[0] not in (2, 3):
        raise UsageError(f"{where}: not a compressed secp256k1 public key (66 hex digits, 02/03…)")
    return value


# -- restoring and comparing -----------------------------------------------------------------


@dataclass
class Secrets:
    """How to open encrypted backups; the passphrase is asked for only when needed."""

    passphrase: Callable[[], str]
    identity_files: Sequence[Path] = ()
    _cached: str | None = field(default=None, repr=False)  # the passphrase, once asked

    def get_passphrase(self) -> str:
        if self._cached is None:
            self._cached = self.passphrase()
        return self._cached

    def identities(self, for_file: Path) -> list[pyrage.x25519.Identity]:
        if not self.identity_files:
            raise UsageError(
                f"{for_file} is encrypted to age recipients",
                hint="pass the matching identity with --identity IDENTITY_FILE",
            )
        return [identity for path in self.identity_files for identity in _read_identities(path)]


def _read_identities(path: Path) -> list[pyrage.x25519.Identity]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise UsageError(f"cannot read identity file {path}: {reason}") from None
    identities = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(text))
        except pyrage.IdentityError:
            # The line is secret: name its position only.
            raise UsageError(
                f"identity file {path}, line {number}: not an age X25519 identity"
            ) from None
    if not identities:
        raise UsageError(f"identity file {path} holds no age identity (AGE-SECRET-KEY-1…)")
    return identities


def verify_backups(files: Sequence[Path], expected: Expected, secrets: Secrets) -> VerifyReport:
    report = VerifyReport(expected)
    shares: list[Path] = []
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path} does not exist or is not a file")
        try:
            kind = classify(path)
        except RestoreFailed as exc:
            report.verdicts.append(BackupVerdict("age", [path], exc.outcome, exc.message))
            continue
        if kind == "sidecar":
            report.skipped.append(path)
        elif kind == "slip39-share":
            shares.append(path)
        elif kind == "age-passphrase":
            report.verdicts.append(
                _verdict(
                    "age-passphrase",
                    [path],
                    partial(_restore_with_passphrase, path, secrets),
                    expected,
                )
            )
        else:
            identities = secrets.identities(path)
            report.verdicts.append(
                _verdict(
                    "age-recipients",
                    [path],
                    partial(restore_age, path, identities=identities),
                    expected,
                )
            )
    if shares:
        report.verdicts.append(_verdict("slip39", shares, lambda: restore_shares(shares), expected))
    if not report.verdicts:
        raise UsageError("no backup file among the arguments (only sidecar .json files)")
    return report


def _restore_with_passphrase(path: Path, secrets: Secrets) -> SignerKey:
    return restore_age(path, passphrase=secrets.get_passphrase())


def _verdict(
    method: str, files: list[Path], restore: Callable[[], SignerKey], expected: Expected
) -> BackupVerdict:
    try:
        with restore() as key:
            public_key = key.public_key_hex
    except RestoreFailed as exc:
        return BackupVerdict(method, exc.files or files, exc.outcome, exc.message)
    if expected.matches(public_key):
        return BackupVerdict(
            method, files, "ok", f"restores the signer's key ({expected.basis})", public_key
        )
    wanted = expected.public_key or "a key of the on-chain signer set"
    return BackupVerdict(
        method,
        files,
        "mismatch",
        f"restores public key {public_key}, not {wanted} ({expected.basis})",
        public_key,
    )


def record_verdicts(store: StateStore, report: VerifyReport) -> None:
    """One event per backup, keyed by the signer's public key; no secret in the data."""
    for verdict in report.verdicts:
        subject = report.expected.public_key or (verdict.public_key if verdict.ok else None)
        try:
            store.record_event(
                EventKind.KEY_BACKUP_VERIFY,
                subject=subject or "unknown",
                outcome=verdict.outcome,
                data={
                    "method": verdict.method,
                    "files": [str(path) for path in verdict.files],
                    "basis": report.expected.basis,
                    "backup_public_key": verdict.public_key,
                    "detail": verdict.detail,
                },
            )
        except Exception as exc:  # noqa: BLE001 - report any database failure the same way
            raise SbtcOpsError(f"cannot record the verification: {exc}") from None
