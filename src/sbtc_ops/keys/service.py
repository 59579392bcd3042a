"""The three key-custody operations, as the CLI calls them: settings in, report out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sbtc_ops.config import Settings
from sbtc_ops.errors import UsageError
from sbtc_ops.keys.backup import BackupReport, BackupRequest, create_backup, validate_request
from sbtc_ops.keys.chain import OnchainSignerSet, read_onchain_signer_set
from sbtc_ops.keys.check import KeyFacts, run_key_checks
from sbtc_ops.keys.locate import locate_signer_key
from sbtc_ops.keys.secretio import require_strong_passphrase
from sbtc_ops.keys.verify import (
    Secrets,
    VerifyReport,
    expected_public_key,
    record_verdicts,
    verify_backups,
)
from sbtc_ops.results import CheckResult
from sbtc_ops.state import EventKind, StateStore

# Log lines carry public keys, sources and paths only.
log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    public_key: str
    source: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return not any(result.status.is_problem for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "public_key": self.public_key,
            "source": self.source,
            "checks": [result.to_json() for result in self.results],
        }


def _chain_reader(settings: Settings, offline: bool) -> Callable[[], OnchainSignerSet] | None:
    return None if offline else (lambda: read_onchain_signer_set(settings))


def check_key(
    settings: Settings, *, key_file: Path | None = None, offline: bool = False
) -> CheckReport:
    with locate_signer_key(settings, key_file=key_file) as key:
        facts = KeyFacts(key.public_key_hex, key.source)
    log.info("signer key found in %s: public key %s", facts.source.description, facts.public_key)
    # The secret is wiped here; the checks only see the public key and where it came from.
    with StateStore.open(settings.state_dir) as store:
        results = run_key_checks(
            facts, settings, settings.key, store, _chain_reader(settings, offline)
        )
    return CheckReport(facts.public_key, facts.source.description, results)


def backup_key(
    settings: Settings,
    out_dir: Path,
    request: BackupRequest,
    *,
    key_file: Path | None = None,
    key_fd: int | None = None,
    passphrase: Callable[[], str] | None = None,
) -> BackupReport:
    """Back the key up; `passphrase` is asked for only once the key was found."""
    validate_request(request)
    with locate_signer_key(settings, key_file=key_file, key_fd=key_fd) as key:
        if request.method == "age-passphrase":
            if passphrase is None:
                raise UsageError("a passphrase is required")
            chosen = passphrase()
            require_strong_passphrase(chosen)
            request = replace(request, passphrase=chosen)
        log.info("backing up the key of %s (%s) to %s", key.public_key_hex, request.method, out_dir)
        report = create_backup(key, out_dir, request)
    for item in report.files:
        log.debug("wrote %s (%s, mode %04o)", item.path, item.role, item.mode)
    with StateStore.open(settings.state_dir) as store:
        store.record_event(
            EventKind.KEY_BACKUP,
            subject=report.public_key,
            outcome="created",
            data={
                "method": report.method,
                "files": [str(item.path) for item in report.files],
                "threshold": report.threshold,
                "shares": report.shares,
                "recipients": report.recipients,
            },
        )
    return report


def verify_key_backups(
    settings: Settings,
    files: Sequence[Path],
    secrets: Secrets,
    *,
    public_key: str | None = None,
    key_file: Path | None = None,
    offline: bool = False,
) -> VerifyReport:
    expected = expected_public_key(
        settings,
        override=public_key,
        key_file=key_file,
        onchain_reader=_chain_reader(settings, offline),
    )
    log.info(
        "comparing backups with %s (%s)", expected.public_key or "the signer set", expected.basis
    )
    report = verify_backups(files, expected, secrets)
    for verdict in report.verdicts:
        log.info("%s %s: %s", verdict.method, verdict.outcome, verdict.detail)
    with StateStore.open(settings.state_dir) as store:
        record_verdicts(store, report)
    return report
