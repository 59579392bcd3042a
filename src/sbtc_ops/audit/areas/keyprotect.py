"""Key protection: the signer's private key is private, not a published test key, backed up.

The key is read from the settings (the signer's config or env file) or signer.key_file, used
to derive the public key, and never put in a finding: findings name files and public keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from coincurve import PrivateKey

from sbtc_ops.audit.framework import (
    EvidenceError,
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.audit.secretfiles import files_holding
from sbtc_ops.host.compose import compose_paths_with_env
from sbtc_ops.keys.wellknown import well_known
from sbtc_ops.state import EventKind, StateStore

AREA = "keys"
SECTION = "Protect the private key; keep an offline cold-storage backup"

# Private keys published in stacks-sbtc/sbtc: one table, kept with key custody.
_HEX_KEY = re.compile(r"^[0-9a-f]{64}(01)?$")


@dataclass(frozen=True)
class SignerKey:
    secret_hex: str  # 64 hex characters, lowercase
    public_hex: str
    source: str


def signer_key(ctx: HostContext) -> SignerKey:
    return ctx.memo("keys.signer", lambda: _load_key(ctx))


def _load_key(ctx: HostContext) -> SignerKey:
    signer = ctx.settings.signer
    if signer.private_key is not None:
        raw = signer.private_key.get_secret_value()
        source = signer.private_key_source or "sbtc-ops settings (signer.private_key)"
    elif signer.key_file is not None:
        raw = ctx.read_text(signer.key_file)
        source = f"key file {signer.key_file}"
    else:
        raise Skip(
            "the signer's private key is not configured (signer.config_path, signer.env_file "
            "or signer.key_file)"
        )
    normalized = raw.strip().lower().removeprefix("0x")
    ctx.add_secret(normalized)
    if not _HEX_KEY.match(normalized):
        raise EvidenceError(f"the private key from {source} is not 64 or 66 hex characters")
    secret_hex = normalized[:64]
    ctx.add_secret(secret_hex)

    try:
        public = PrivateKey(bytes.fromhex(secret_hex)).public_key.format(compressed=True)
    except ValueError:
        raise EvidenceError(f"the private key from {source} is not a valid secp256k1 key") from None
    return SignerKey(secret_hex, public.hex(), source)


def _key_files(ctx: HostContext) -> list[str]:
    signer = ctx.settings.signer
    paths = [str(p) for p in (signer.config_path, signer.env_file, signer.key_file) if p]
    paths += compose_paths_with_env(ctx)
    return list(dict.fromkeys(ctx.show(path) for path in paths))


@check(
    "KEY-001",
    area=AREA,
    title="The private key is stored owner-only",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The key decrypts the signer's DKG shares and signs for sBTC; a copy in a file "
    "that other accounts can read is a copy anyone on the host can take.",
    remediation="`chmod 600` (owner: the account running the signer) every listed file, or "
    "move the key into a file of its own with mode 0400 and reference it from there.",
)
def key_file_modes(ctx: HostContext) -> Outcome:
    key = signer_key(ctx)
    found, unreadable = files_holding(
        ctx, _key_files(ctx), lambda text: "the key" if key.secret_hex in text.lower() else None
    )
    if unreadable:
        path, exc = unreadable[0]
        raise Skip(f"cannot inspect {path}: {exc}")
    exposed = [{"file": f.path, "mode": f"{f.mode:o}"} for f in found if f.exposed]
    private = [f"{f.path} ({f.mode:o})" for f in found if not f.exposed]
    if exposed:
        listed = ", ".join(f"{e['file']} (mode {e['mode']})" for e in exposed)
        return failed(
            f"the private key is in files readable beyond the owner: {listed}", items=exposed
        )
    if not private:
        return passed(f"the key ({key.source}) is in no file sbtc-ops knows of")
    return passed(f"the key is only in owner-only files: {', '.join(private)}")


@check(
    "KEY-002",
    area=AREA,
    title="The private key is not a published test key",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The sBTC repository publishes the devenv signers' private keys (one is the "
    "signer's built-in default); a signer running with one of them has no secret at all.",
    remediation="Generate a new key on an offline machine, register its public key with the "
    "signer set, and keep its cold backup; never reuse a key from a sample config.",
)
def not_well_known(ctx: HostContext) -> Outcome:
    key = signer_key(ctx)
    known = well_known(key.public_hex)
    origin = known.origin if known else None
    if origin is not None:
        return failed(
            f"the key (public key {key.public_hex}) is published: {origin}",
            public_key=key.public_hex,
        )
    return passed(
        f"public key {key.public_hex} is not a known published key", public_key=key.public_hex
    )


@check(
    "KEY-003",
    area=AREA,
    title="A verified cold-storage backup of the key exists",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Without a tested offline copy, losing the host loses the key, and with it the "
    "ability to decrypt the DKG shares; the page asks for an offline, secure backup.",
    remediation="Make an encrypted cold copy (`sbtc-ops key backup`) and prove it restores the "
    "same public key (`sbtc-ops key verify-backup`), then repeat periodically.",
)
def backup_verified(ctx: HostContext) -> Outcome:
    key = signer_key(ctx)
    state_db = ctx.settings.state_dir / "state.db"
    if not state_db.exists():
        return warned(f"no key backup verification recorded (no state in {state_db.parent})")

    with StateStore.open(ctx.settings.state_dir) as store:
        event = store.last_event(EventKind.KEY_BACKUP_VERIFY, key.public_hex)
    if event is None:
        return warned(f"no verified backup recorded for public key {key.public_hex}")
    when = datetime.fromtimestamp(event.at, UTC)
    age_days = (ctx.now - when).days
    if event.outcome != "ok":
        return warned(f"the last backup verification ({when:%Y-%m-%d}) ended '{event.outcome}'")
    max_age = ctx.settings.key.backup_max_age_days
    if age_days > max_age:
        return warned(
            f"the last verified backup check is {age_days} days old (limit {max_age:g})",
            remediation="Verify the cold backup again: `sbtc-ops key verify-backup`.",
        )
    return passed(
        f"backup verified {when:%Y-%m-%d} ({age_days} days ago)", verified_at=when.isoformat()
    )
