"""The `signer-check` job of `serve`: the signer's own state over time, and image changes.

Every run (default every 5 minutes) records, in its run data, what the metrics export:

* DKG: the newest `dkg_shares` row's status and, when unverified, for how many Bitcoin blocks
  (`sbtc_ops_dkg_newest_status`, `sbtc_ops_dkg_unverified_blocks`);
* the database: its size (also appended to the `db-size` history the audit shares), growth
  per day over that history, and days until the data/backup volumes are full;
* Stacks event delivery: the Stacks node's tip minus the signer's, from `/info` (a stalled
  `/new_block` delivery shows only there: sbtc #2084);
* the signer's image (compose) and build revision (`/info` build_info). When either changes,
  a `signer-image` event records the change and the newest backup taken before it (the
  rollback point), and a backup is taken at once.

Each part fails alone: an unreachable source leaves its figures out and is named in `errors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sbtc_ops import redact
from sbtc_ops.backup.service import request_from_settings, run_backup
from sbtc_ops.config import Settings, secret_values
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.history import JobOutcome
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.nodes import bitcoin_height, signer_info, signer_revision
from sbtc_ops.host.signer import data_volumes, registry_signer_data, signer_images, volume_free
from sbtc_ops.serve.scheduler import JobResult
from sbtc_ops.signer import dbfacts
from sbtc_ops.signer.dkgstate import DkgState
from sbtc_ops.signer.running import database_size_bytes, dkg_state, window_of
from sbtc_ops.state import EventKind, StateStore

IMAGE_SUBJECT = "signer"
_IMAGE_EVENTS_KEPT = 200


def signer_check_job(settings: Settings, now: float | None = None) -> JobResult:
    now = time.time() if now is None else now
    ctx = HostContext(settings)
    data: dict[str, Any] = {"errors": {}}
    for name, part in (
        ("dkg", _dkg_part),
        ("database", _database_part),
        ("events", _events_part),
        ("image", _image_part),
    ):
        try:
            data.update(part(ctx, settings, now))
        except Exception as exc:  # noqa: BLE001 - each part fails alone, named in the result
            data["errors"][name] = _reason(exc, settings)
    summary = _summary(data)
    return JobResult(JobOutcome.PROBLEM if data["errors"] else JobOutcome.OK, summary, data)


def _reason(exc: Exception, settings: Settings) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact.scrub(text, secret_values(settings))[:300]


def _summary(data: dict[str, Any]) -> str:
    parts = [f"dkg {data.get('dkg_newest_status', '?')}"]
    if "db_bytes" in data:
        parts.append(f"db {data['db_bytes'] / 1e6:.1f} MB")
    if "stacks_event_lag_blocks" in data:
        parts.append(f"stacks lag {data['stacks_event_lag_blocks']}")
    if data.get("image_changed"):
        parts.append("signer image changed")
    if data["errors"]:
        parts.append("errors: " + ", ".join(sorted(data["errors"])))
    return "; ".join(parts)


# -- parts ----------------------------------------------------------------------------------

Part = Callable[[HostContext, Settings, float], dict[str, Any]]


def _dkg_part(ctx: HostContext, settings: Settings, now: float) -> dict[str, Any]:
    state = dkg_state(ctx)
    out: dict[str, Any] = {"dkg_newest_status": state.newest_status, "dkg_rows": len(state.rows)}
    out["dkg_verification_window"] = window_of(ctx)
    if state.newest_status == "unverified":
        out["dkg_unverified_blocks"] = state.unverified_blocks(bitcoin_height(ctx))
    else:
        out["dkg_unverified_blocks"] = 0
    out["dkg_registry_key_state"] = _registry_key_state(ctx, state)
    return out


def _registry_key_state(ctx: HostContext, state: DkgState) -> str:
    """match / pending (the registry holds an older verified key) / missing (the registry's
    key is not among the shares: a missed round) / unknown (registry unreadable or unset)."""
    try:
        key = registry_signer_data(ctx).aggregate_key
    except (Unavailable, EvidenceError):
        return "unknown"
    if key is None:
        return "unknown"
    verified = state.newest_verified
    if verified is not None and verified.key == key.hex():
        return "match"
    held = state.find(key.hex())
    return "pending" if held is not None and held.status == "verified" else "missing"


def _database_part(ctx: HostContext, settings: Settings, now: float) -> dict[str, Any]:
    size = database_size_bytes(ctx)
    dbfacts.record_size(settings.state_dir, now, size)
    per_day = dbfacts.growth_per_day(dbfacts.size_history(settings.state_dir), now)
    out: dict[str, Any] = {"db_bytes": size, "db_growth_bytes_per_day": per_day}
    volumes: dict[str, dict[str, Any]] = {}
    for role, path in data_volumes(ctx):
        target, total, avail = volume_free(ctx, path)
        entry = volumes.setdefault(target, {"roles": [], "size": total, "avail": avail})
        entry["roles"].append(role)
        entry["days_until_full"] = dbfacts.days_until_full(avail, per_day)
    out["db_volumes"] = volumes
    return out


def _events_part(ctx: HostContext, settings: Settings, now: float) -> dict[str, Any]:
    info = signer_info(ctx)
    out: dict[str, Any] = {}
    for chain in ("stacks", "bitcoin"):
        section = info.get(chain)
        if not isinstance(section, dict):
            continue
        mine, node = _tip_height(section.get("signer_tip")), _tip_height(section.get("node_tip"))
        if mine is not None and node is not None:
            out[f"{chain}_event_lag_blocks"] = max(0, node - mine)
    build = info.get("build_info")
    if isinstance(build, dict) and build.get("git_revision"):
        out["signer_revision"] = str(build["git_revision"])
    return out


def _tip_height(tip: Any) -> int | None:
    height = tip.get("block_height") if isinstance(tip, dict) else None
    return height if isinstance(height, int) and not isinstance(height, bool) else None


def _image_part(ctx: HostContext, settings: Settings, now: float) -> dict[str, Any]:
    images = signer_images(ctx)
    image = images[0] if images else None
    revision = signer_revision(ctx)
    if not image and not revision:
        return {}
    with StateStore.open(settings.state_dir) as store:
        previous = store.last_event(EventKind.SIGNER_IMAGE, IMAGE_SUBJECT)
        before = next(
            (e for e in store.events(EventKind.BACKUP, limit=50) if e.outcome == "ok"), None
        )
    current = {"image": image, "revision": revision}
    out: dict[str, Any] = {"signer_image": image, "image_changed": False}
    if previous is None:
        _record_image(settings, now, {**current, "first_seen": True})
        return out
    changes = {
        key: previous.data.get(key)
        for key, value in current.items()
        if value and previous.data.get(key) and value != previous.data.get(key)
    }
    if not changes and all(previous.data.get(k) or not v for k, v in current.items()):
        return out
    event = {
        **current,
        "previous_image": previous.data.get("image"),
        "previous_revision": previous.data.get("revision"),
        "backup_before": before.subject if before is not None else None,
    }
    if changes:
        event.update(_backup_now(settings))
        out["image_changed"] = True
    _record_image(settings, now, event)
    return out


def _backup_now(settings: Settings) -> dict[str, Any]:
    """A backup right after the change was seen (the migrations may be running now)."""
    try:
        outcome = run_backup(settings, request_from_settings(settings, None))
    except SbtcOpsError as exc:
        return {"backup_after_error": exc.message}
    return {"backup_after": outcome.manifest.id}


def _record_image(settings: Settings, now: float, data: dict[str, Any]) -> None:
    with StateStore.open(settings.state_dir) as store:
        store.record_event(EventKind.SIGNER_IMAGE, IMAGE_SUBJECT, "ok", data, at=now)
        store.prune_events(EventKind.SIGNER_IMAGE, _IMAGE_EVENTS_KEPT)
