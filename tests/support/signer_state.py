"""A recorded `signer-check` run (as serve's scheduler records it), for metrics tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbtc_ops.state import StateStore

SIGNER_CHECK_DATA: dict[str, Any] = {
    "errors": {},
    "dkg_newest_status": "unverified",
    "dkg_rows": 6,
    "dkg_verification_window": 10,
    "dkg_unverified_blocks": 4,
    "dkg_registry_key_state": "match",
    "db_bytes": 3_500_000_000,
    "db_growth_bytes_per_day": 25_000_000.0,
    "db_volumes": {"/srv": {"roles": ["database", "backups"], "size": 10**12, "avail": 10**11,
                            "days_until_full": 4000.0}},
    "stacks_event_lag_blocks": 3,
    "bitcoin_event_lag_blocks": 0,
}  # fmt: skip


def record_signer_check(state_dir: Path, at: float, **data: Any) -> None:
    with StateStore.open(state_dir) as store:
        run = store.start_run("signer-check", at=at)
        store.finish_run(run, "ok", {"summary": "signer-check ok", **SIGNER_CHECK_DATA, **data},
                         at=at + 2)  # fmt: skip
