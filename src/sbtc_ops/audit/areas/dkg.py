"""DKG state: the newest shares verified, not stuck unverified, and the registry's key held.

Evidence: the signer database's `sbtc_signer.dkg_shares` rows (read-only), the Bitcoin tip
(``getblockchaininfo``) and the registry's `get-current-signer-data`. `/info`'s view
(`dkg.current_aggregate_key` vs `contract_aggregate_key`) is MON-008; these checks read the
rows themselves because `/info` reports the newest row whatever its status.
"""

from __future__ import annotations

from typing import Any

from sbtc_ops.audit.framework import (
    HostContext,
    Outcome,
    Severity,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.host.nodes import bitcoin_height
from sbtc_ops.host.signer import registry_signer_data
from sbtc_ops.signer.dkgstate import DkgState
from sbtc_ops.signer.running import dkg_state, window_of

AREA = "dkg"
SECTION = "DKG shares verified, current and backed up"


def _age(ctx: HostContext, state: DkgState) -> str:
    newest = state.newest
    if newest is None:
        return ""
    hours = (ctx.now - newest.created_at).total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


@check(
    "DKG-001",
    area=AREA,
    title="The newest DKG shares are verified",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="A failed newest round, or one left unverified, halts sBTC operations until a "
    "new round succeeds (stacks-sbtc/sbtc #1696, #2088).",
    remediation="Read the signer's logs around the round's start block; coordinate a new DKG "
    "round with the other signers; keep the older verified shares (old UTXOs may need them).",
)
def newest_verified(ctx: HostContext) -> Outcome:
    state = dkg_state(ctx)
    newest = state.newest
    if newest is None:
        return warned("no DKG shares yet: this signer has not taken part in a DKG round")
    data: dict[str, Any] = {
        "key": newest.key,
        "status": newest.status,
        "created_at": newest.created_at.isoformat(),
        "started_at_bitcoin_block_height": newest.started_height,
        "rounds": len(state.rows),
    }
    text = f"newest shares {newest.key[:16]}… are {newest.status}, created {_age(ctx, state)} ago"
    if newest.status == "failed":
        return failed(text, **data)
    if newest.status == "unverified":
        return warned(text + " (see DKG-002 for the verification window)", **data)
    return passed(text, **data)


@check(
    "DKG-002",
    area=AREA,
    title="Unverified shares are within dkg_verification_window",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="Shares not verified within dkg_verification_window Bitcoin blocks (default 10, "
    "sbtc #1317) are marked failed; a round that long unverified is stalled.",
    remediation="Check the signer's logs and its peers (MON-004); coordinate with the other "
    "signers before the window closes.",
    timeout_s=30,
)
def unverified_window(ctx: HostContext) -> Outcome:
    state = dkg_state(ctx)
    newest = state.newest
    if newest is None or newest.status != "unverified":
        return passed(f"no unverified round pending (newest: {state.newest_status})")
    tip = bitcoin_height(ctx)
    waited = state.unverified_blocks(tip) or 0
    window = window_of(ctx)
    data: dict[str, Any] = {"blocks_unverified": waited, "window": window, "bitcoin_tip": tip}
    text = (
        f"newest shares unverified for {waited} Bitcoin blocks (started at "
        f"{newest.started_height}, tip {tip}; window {window})"
    )
    if waited > window:
        return failed(text + ": past the window, the round has stalled", **data)
    return warned(text, **data)


@check(
    "DKG-003",
    area=AREA,
    title="The newest verified key is the registry's aggregate key",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The docs' backup check compares the newest verified dkg_shares key with "
    "sbtc-registry's current key: if the registry holds a key whose shares this signer lacks, "
    "it cannot sign for the peg wallet.",
    remediation="If the registry's key is missing here, this signer missed a DKG round: "
    "restore the newest verified backup or contact the signer set; if the registry is older, "
    "the rotate-keys transaction is pending.",
    timeout_s=30,
)
def verified_key_matches_registry(ctx: HostContext) -> Outcome:
    state = dkg_state(ctx)
    registry = registry_signer_data(ctx)
    on_chain = registry.aggregate_key.hex() if registry.aggregate_key else None
    verified = state.newest_verified
    data = {"registry": on_chain, "newest_verified": verified.key if verified else None}
    if on_chain is None:
        return warned("the registry holds no aggregate key yet", **data)
    if verified is not None and verified.key == on_chain:
        return passed(f"newest verified key {on_chain} is the registry's", **data)
    held = state.find(on_chain)
    if held is None:
        return failed(f"the registry's key {on_chain} is not among this signer's shares", **data)
    if held.status != "verified":
        return failed(f"the registry's key {on_chain} is {held.status} here", **data)
    newer = verified.key if verified else "?"
    return warned(
        f"the newest verified key {newer} is newer than the registry's {on_chain}: "
        "the rotate-keys transaction is pending",
        **data,
    )
