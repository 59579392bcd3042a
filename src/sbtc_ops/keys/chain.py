"""The on-chain signer set (`get-current-signer-data` of sbtc-registry), as key custody needs it.

One function, so the rest of `keys` does not depend on how the registry is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sbtc_ops.config import Settings
from sbtc_ops.stacks import read_signer_data


@dataclass(frozen=True)
class OnchainSignerSet:
    """The signer set as the configured Stacks endpoints report it."""

    signer_set: frozenset[str] | None  # compressed keys, hex; None when no endpoint answered
    endpoints_ok: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "endpoint: problem", passwords redacted
    agreed: bool = True  # every answering endpoint reported the same set

    def contains(self, public_key_hex: str) -> bool:
        return self.signer_set is not None and public_key_hex.lower() in self.signer_set


def read_onchain_signer_set(settings: Settings) -> OnchainSignerSet:
    """Ask every configured endpoint; endpoint failures are reported, not raised."""
    reading = read_signer_data(settings)
    errors = [f"{outcome.display_url}: {outcome.error}" for outcome in reading.failed]
    sets = [
        frozenset(key.hex() for key in outcome.value.signer_set)
        for outcome in reading.succeeded
        if outcome.value is not None
    ]
    endpoints = [outcome.display_url for outcome in reading.succeeded]
    if not sets:
        return OnchainSignerSet(None, endpoints, errors)
    agreed = all(other == sets[0] for other in sets[1:])
    # When endpoints disagree, membership of any of their sets is reported as a warning.
    members = sets[0] if agreed else frozenset().union(*sets)
    return OnchainSignerSet(members, endpoints, errors, agreed)
