"""`key check`: is the signer's private key protected, the right one, and backed up?

Each check is a small function returning a CheckResult; `run_key_checks` runs them in order.
None of them ever reads or reports the key itself: they see the public key and the source.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from sbtc_ops.config import KeySettings, Settings
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.keys.chain import OnchainSignerSet
from sbtc_ops.keys.material import KeySource
from sbtc_ops.keys.wellknown import well_known
from sbtc_ops.results import CheckResult, Status, timed_check
from sbtc_ops.state import EventKind, StateStore

SECTION = "protect the private key; keep an offline cold-storage backup"
DAY = 86400.0


@dataclass(frozen=True)
class KeyFacts:
    """What the checks may know about the key: never the key itself."""

    public_key: str
    source: KeySource


def _result(
    check_id: str,
    status: Status,
    detail: str,
    remediation: str | None = None,
    data: dict[str, object] | None = None,
) -> CheckResult:
    return CheckResult(check_id, status, detail, remediation, SECTION, data=dict(data or {}))


# -- the file holding the key ----------------------------------------------------------------


def check_file_mode(facts: KeyFacts) -> CheckResult:
    path = facts.source.path
    if path is None:
        return _result(
            "key.file_mode",
            Status.SKIP,
            f"the key comes from {facts.source.description}: no file to check "
            "(whoever can read that process environment can read the key)",
        )
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return _result("key.file_mode", Status.ERROR, f"cannot stat {path}: {exc.strerror}")
    if mode & 0o077:
        readable = bool(mode & 0o044)
        exposure = f"readable by {_who(mode)}" if readable else "writable or executable by others"
        return _result(
            "key.file_mode",
            Status.FAIL if readable else Status.WARN,
            f"{path} holds the key and is {exposure} (mode {mode:04o})",
            f"chmod 600 {path}",
            data={"path": str(path), "mode": f"{mode:04o}"},
        )
    return _result(
        "key.file_mode",
        Status.PASS,
        f"{path} is private (mode {mode:04o})",
        data={"path": str(path)},
    )


def _who(mode: int) -> str:
    readers = [name for bit, name in ((0o040, "its group"), (0o004, "every user")) if mode & bit]
    return " and ".join(readers)


def check_owner(facts: KeyFacts, options: KeySettings) -> CheckResult:
    path = facts.source.path
    if path is None:
        return _result("key.owner", Status.SKIP, "no file holds the key")
    try:
        uid = path.stat().st_uid
    except OSError as exc:
        return _result("key.owner", Status.ERROR, f"cannot stat {path}: {exc.strerror}")
    owner = _user_name(uid)
    if options.expected_owner is not None:
        if owner == options.expected_owner:
            return _result("key.owner", Status.PASS, f"{path} is owned by {owner}")
        return _result(
            "key.owner",
            Status.FAIL,
            f"{path} is owned by {owner}, not {options.expected_owner} (key.expected_owner)",
            f"chown {options.expected_owner} {path}",
        )
    if uid in (0, os.geteuid()):
        return _result("key.owner", Status.PASS, f"{path} is owned by {owner}")
    return _result(
        "key.owner",
        Status.WARN,
        f"{path} is owned by {owner}, neither root nor the user running sbtc-ops",
        "make sure that account is the signer's service account and set key.expected_owner",
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# -- which key it is -------------------------------------------------------------------------


def check_configured_public_key(facts: KeyFacts, settings: Settings) -> CheckResult:
    configured = (settings.signer.public_key or "").lower()
    if not configured:
        return _result(
            "key.public_key_config", Status.SKIP, "signer.public_key is not set in sbtc-ops"
        )
    if configured == facts.public_key:
        return _result("key.public_key_config", Status.PASS, "matches signer.public_key")
    return _result(
        "key.public_key_config",
        Status.FAIL,
        f"the key's public key differs from signer.public_key ({configured})",
        "the signer is configured with another key than the one sbtc-ops was told about; "
        "find out which is right before anything else",
    )


def check_bootstrap_set(facts: KeyFacts, settings: Settings) -> CheckResult:
    members = {key.lower() for key in settings.signer.bootstrap_signing_set}
    if not members:
        return _result(
            "key.in_bootstrap_set",
            Status.WARN,
            "the signer's bootstrap_signing_set is not known to sbtc-ops",
            "set signer.config_path to the signer's signer-config.toml",
        )
    if facts.public_key in members:
        return _result(
            "key.in_bootstrap_set",
            Status.PASS,
            f"in bootstrap_signing_set ({len(members)} keys)",
        )
    return _result(
        "key.in_bootstrap_set",
        Status.FAIL,
        f"not in bootstrap_signing_set ({len(members)} keys): the signer requires its own key there",
        "add this public key to bootstrap_signing_set, or check that the right key is configured",
    )


def check_onchain_set(
    facts: KeyFacts, reader: Callable[[], OnchainSignerSet] | None
) -> CheckResult:
    if reader is None:
        return _result("key.in_onchain_signer_set", Status.SKIP, "skipped (--offline)")
    try:
        onchain = reader()
    except SbtcOpsError as exc:
        return _result("key.in_onchain_signer_set", Status.ERROR, exc.message)
    data: dict[str, object] = {"endpoints": onchain.endpoints_ok, "errors": onchain.errors}
    if onchain.signer_set is None:
        return _result(
            "key.in_onchain_signer_set",
            Status.ERROR,
            "no Stacks endpoint answered: " + "; ".join(onchain.errors),
            "check stacks.endpoints and that the node is reachable",
            data=data,
        )
    if not onchain.signer_set:
        return _result(
            "key.in_onchain_signer_set",
            Status.WARN,
            "the sbtc-registry has no signer set yet (before the first key rotation)",
            data=data,
        )
    if not onchain.contains(facts.public_key):
        return _result(
            "key.in_onchain_signer_set",
            Status.FAIL,
            f"not in the current on-chain signer set ({len(onchain.signer_set)} keys)",
            "this host holds a key the signer set does not know: check the configured key",
            data=data,
        )
    if not onchain.agreed:
        return _result(
            "key.in_onchain_signer_set",
            Status.WARN,
            "in the signer set of some endpoints, but the endpoints disagree on the set",
            "check that every Stacks endpoint is synced",
            data=data,
        )
    return _result(
        "key.in_onchain_signer_set",
        Status.PASS,
        f"in the current on-chain signer set ({len(onchain.signer_set)} keys)",
        data=data,
    )


def check_not_well_known(facts: KeyFacts) -> CheckResult:
    entry = well_known(facts.public_key)
    if entry is None:
        return _result("key.not_well_known", Status.PASS, "not a published test key")
    return _result(
        "key.not_well_known",
        Status.FAIL,
        f"this key is public: it is {entry.origin}",
        "generate a new private key for this signer and coordinate a key rotation; "
        "anyone can sign with this one",
    )


# -- the cold backup -------------------------------------------------------------------------


def check_cold_backup(
    facts: KeyFacts, store: StateStore, options: KeySettings, now: float | None = None
) -> CheckResult:
    now = time.time() if now is None else now
    events = store.events(EventKind.KEY_BACKUP_VERIFY, facts.public_key, limit=200)
    create = (
        "create one with `sbtc-ops key backup` and prove it restores with "
        "`sbtc-ops key verify-backup` (see docs/key-custody.md)"
    )
    last_ok = next((event for event in events if event.outcome == "ok"), None)
    latest = events[0] if events else None
    if latest is not None and latest is not last_ok and latest.outcome == "mismatch":
        return _result(
            "key.cold_backup_verified",
            Status.FAIL,
            f"the last backup verification ({_date(latest.at)}) restored a different key",
            "that backup is not a backup of this key: " + create,
        )
    if last_ok is None:
        detail = "no verified cold backup on record"
        if latest is not None:
            detail += f" (last attempt {_date(latest.at)}: {latest.outcome})"
        return _result("key.cold_backup_verified", Status.WARN, detail, create)
    age_days = (now - last_ok.at) / DAY
    data: dict[str, object] = {"verified_at": _date(last_ok.at), "age_days": round(age_days, 1)}
    if age_days > options.backup_max_age_days:
        return _result(
            "key.cold_backup_verified",
            Status.WARN,
            f"last verified {age_days:.0f} days ago ({_date(last_ok.at)}); "
            f"the limit is {options.backup_max_age_days:g} days",
            "take the cold backup out and run `sbtc-ops key verify-backup` on it",
            data=data,
        )
    detail = f"verified {age_days:.0f} days ago ({_date(last_ok.at)})"
    if latest is not last_ok and latest is not None:
        detail += f"; a later attempt failed: {latest.outcome}"
    return _result("key.cold_backup_verified", Status.PASS, detail, data=data)


def _date(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- all of them -----------------------------------------------------------------------------


def run_key_checks(
    facts: KeyFacts,
    settings: Settings,
    options: KeySettings,
    store: StateStore,
    onchain_reader: Callable[[], OnchainSignerSet] | None,
) -> list[CheckResult]:
    checks: list[Callable[[], CheckResult]] = [
        lambda: check_file_mode(facts),
        lambda: check_owner(facts, options),
        lambda: check_configured_public_key(facts, settings),
        lambda: check_not_well_known(facts),
        lambda: check_bootstrap_set(facts, settings),
        lambda: check_onchain_set(facts, onchain_reader),
        lambda: check_cold_backup(facts, store, options),
    ]
    return [timed_check(check) for check in checks]
