"""The state of the signer's DKG shares, from its `dkg_shares` rows (one row per DKG round).

A round's row is inserted `unverified` and becomes `verified` or `failed`
(`storage/postgres/write.rs` verify_dkg_shares / revoke_dkg_shares). Shares still unverified
`dkg_verification_window` Bitcoin blocks (default 10, #1317) after the round started are marked
failed, which halts sBTC operations until a new round succeeds (sbtc #1696). `/info`'s
`dkg.current_aggregate_key` is the newest row whatever its status, so it is not "verified".
Pure: the audit and `serve` run the query, this module judges the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATUSES = ("verified", "unverified", "failed", "none")
DEFAULT_VERIFICATION_WINDOW = 10

DKG_ROWS_QUERY = (
    "SELECT encode(aggregate_key, 'hex'), dkg_shares_status::text, created_at, "
    "started_at_bitcoin_block_height FROM sbtc_signer.dkg_shares "
    "ORDER BY created_at DESC, aggregate_key"
)


@dataclass(frozen=True)
class DkgRow:
    key: str
    status: str
    created_at: datetime
    started_height: int


@dataclass(frozen=True)
class DkgState:
    rows: tuple[DkgRow, ...]  # newest first

    @property
    def newest(self) -> DkgRow | None:
        return self.rows[0] if self.rows else None

    @property
    def newest_status(self) -> str:
        return self.newest.status if self.newest is not None else "none"

    @property
    def newest_verified(self) -> DkgRow | None:
        return next((r for r in self.rows if r.status == "verified"), None)

    def find(self, key: str) -> DkgRow | None:
        wanted = key.lower().removeprefix("0x")
        return next((r for r in self.rows if r.key == wanted), None)

    def unverified_blocks(self, tip: int) -> int | None:
        """Bitcoin blocks the newest shares have waited unverified (None: not unverified)."""
        newest = self.newest
        if newest is None or newest.status != "unverified":
            return None
        return max(0, tip - newest.started_height)


def state_from_rows(rows: Iterable[Sequence[Any]]) -> DkgState:
    return DkgState(tuple(DkgRow(str(k), str(s), c, int(h)) for k, s, c, h in rows))


def verification_window(value: Any) -> int:
    """The configured window, or the signer's default when unset or not a number."""
    try:
        window = int(str(value))
    except (TypeError, ValueError):
        return DEFAULT_VERIFICATION_WINDOW
    return window if window > 0 else DEFAULT_VERIFICATION_WINDOW
