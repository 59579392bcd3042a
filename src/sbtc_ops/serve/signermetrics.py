"""Metrics from the newest `signer-check` run: DKG state, database size and growth, days until
the volumes are full, event-delivery lag. Series are absent until a run has measured them, so
an alert never fires on a figure nobody read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from sbtc_ops.serve.gauges import PREFIX, gauge, number, state_set
from sbtc_ops.serve.snapshot import Snapshot
from sbtc_ops.signer.dkgstate import STATUSES

SIGNER_CHECK = "signer-check"
KEY_STATES = ("match", "pending", "missing", "unknown")


def signer_metrics(snap: Snapshot) -> Iterator[Metric]:
    run = snap.last_runs.get(SIGNER_CHECK)
    if run is None:
        return
    data = run.data
    yield from gauge(
        "signer_check_timestamp_seconds",
        "When the signer's DKG, database and event-lag state was last read.",
        run.ended_at or run.started_at,
    )
    yield from _dkg(data)
    yield from _database(data)
    yield from gauge(
        "stacks_event_lag_blocks",
        "Stacks node tip minus the signer's Stacks tip (GET /info): event delivery lag.",
        data.get("stacks_event_lag_blocks"),
    )
    yield from gauge(
        "bitcoin_lag_blocks",
        "Bitcoin node tip minus the signer's Bitcoin tip (GET /info).",
        data.get("bitcoin_event_lag_blocks"),
    )


def _dkg(data: dict[str, Any]) -> Iterator[Metric]:
    status = data.get("dkg_newest_status")
    if status not in STATUSES:
        return
    yield state_set(
        "dkg_newest_status",
        "Status of the newest dkg_shares row (1 for the current one; none: no row).",
        "status",
        STATUSES,
        status,
    )
    yield from gauge(
        "dkg_unverified_blocks",
        "Bitcoin blocks the newest DKG shares have been unverified (0 unless unverified).",
        data.get("dkg_unverified_blocks"),
    )
    key_state = data.get("dkg_registry_key_state")
    if key_state in KEY_STATES:
        yield state_set(
            "dkg_registry_key_state",
            "Newest verified DKG key vs the registry's: match, pending (registry older), "
            "missing (the registry's key is not among the shares), unknown.",
            "state",
            KEY_STATES,
            key_state,
        )
    yield from gauge(
        "dkg_verification_window_blocks",
        "The signer's dkg_verification_window (Bitcoin blocks).",
        data.get("dkg_verification_window"),
    )


def _database(data: dict[str, Any]) -> Iterator[Metric]:
    yield from gauge("db_size_bytes", "Size of the signer database.", data.get("db_bytes"))
    yield from gauge(
        "db_growth_bytes_per_day",
        "Growth of the signer database over the recorded sizes of the last 30 days.",
        data.get("db_growth_bytes_per_day"),
    )
    volumes = data.get("db_volumes")
    if not isinstance(volumes, dict) or not volumes:
        return
    free = GaugeMetricFamily(
        f"{PREFIX}_db_volume_free_bytes",
        "Free bytes on the volume holding the database and/or the backups.",
        labels=["mount", "holds"],
    )
    days = GaugeMetricFamily(
        f"{PREFIX}_db_volume_days_until_full",
        "Days until the volume is full at the database's growth rate (absent: not growing).",
        labels=["mount", "holds"],
    )
    for mount, entry in sorted(volumes.items()):
        if not isinstance(entry, dict):
            continue
        holds = "+".join(str(r) for r in entry.get("roles", []))
        avail = number(entry.get("avail"))
        if avail is not None:
            free.add_metric([str(mount), holds], avail)
        left = number(entry.get("days_until_full"))
        if left is not None:
            days.add_metric([str(mount), holds], left)
    yield free
    yield days
