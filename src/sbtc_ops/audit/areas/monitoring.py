"""Monitoring: the signer's Prometheus metrics are on, alive and private; its /info agrees.

Evidence: two scrapes of the signer's exporter (``signer.prometheus_exporter_endpoint``, or
``audit.metrics_url``) ``audit.metrics_interval_s`` apart; the signer's own ``GET /info`` on
its event-observer port (``audit.signer_info_url``, default from ``event_observer.bind``,
reached over loopback); the newest complete backup's manifest (``backup`` settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from sbtc_ops.audit.backuplist import backup_configured, backup_rows
from sbtc_ops.audit.firewallview import FirewallView, firewall_view
from sbtc_ops.audit.framework import (
    EvidenceError,
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    skip_unless,
    skipped,
    warned,
)
from sbtc_ops.audit.netsource import failed_if_unreachable
from sbtc_ops.audit.ports import allowed_ports
from sbtc_ops.audit.statefiles import read_state, write_state
from sbtc_ops.host.compose import compose_files_if_configured, published_ports
from sbtc_ops.host.http import (
    Malformed,
    Unreachable,
    fetch,
    local_source_url,
)
from sbtc_ops.host.nodes import signer_info

AREA = "monitoring"
SECTION = "Logs and Prometheus metrics"
SIGNER_APP = "signer"
BLOCK_COUNTER = "blocks_observed_total"
PEERS_GAUGE = "peers_connected"
DEFAULT_METRICS_PORT = 9184
SCRAPE_STATE = "audit-metrics-scrape.json"
PREVIOUS_SCRAPE_MAX_AGE_S = 6 * 3600
BITCOIN_STALL_S = 3 * 3600  # ~18 expected blocks: none means the signer is not following


# -- metrics --------------------------------------------------------------------------------


@dataclass
class Scrape:
    at: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def signer_values(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [
            (labels, value)
            for labels, value in self.samples.get(name, [])
            if labels.get("app") == SIGNER_APP
        ]

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {labels.get(label, ""): value for labels, value in self.signer_values(name)}


def metrics_url(ctx: HostContext) -> str:
    return local_source_url(
        ctx.settings.audit.metrics_url,
        ctx.settings.signer.prometheus_exporter_endpoint,
        "/metrics",
        "the signer's prometheus_exporter_endpoint is not configured",
    )


def parse_exposition(text: str, what: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    except (ValueError, TypeError, IndexError) as exc:
        raise Malformed(f"{what}: not in the Prometheus text format ({exc})") from None
    if not samples:
        raise Malformed(f"{what}: no samples (not a Prometheus exposition)")
    return samples


def _scrape(ctx: HostContext) -> Scrape:
    url = metrics_url(ctx)
    what = "signer metrics"
    reply = fetch(ctx, "GET", url, what=what)
    return Scrape(time.monotonic(), parse_exposition(reply.text, f"{what} ({url})"))


def first_scrape(ctx: HostContext) -> Scrape:
    return ctx.memo("metrics.first", lambda: _scrape(ctx))


def second_scrape(ctx: HostContext) -> Scrape:
    def later() -> Scrape:
        first = first_scrape(ctx)
        wait = first.at + ctx.settings.audit.metrics_interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return _scrape(ctx)

    return ctx.memo("metrics.second", later)


def _needs_endpoint(ctx: HostContext, use: Callable[[Scrape], Outcome]) -> Outcome:
    """Checks downstream of MON-002: an unanswering endpoint is MON-002's failure, not theirs."""
    try:
        scrape = first_scrape(ctx)
    except (Unreachable, EvidenceError) as exc:
        return skipped(f"no metrics to inspect (see MON-002): {exc}")
    return use(scrape)


@check(
    "MON-001",
    area=AREA,
    title="Signer Prometheus exporter configured",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Without `prometheus_exporter_endpoint` the signer exports no metrics: a stalled "
    "or isolated signer goes unnoticed until a signing round fails.",
    remediation='Set `[signer] prometheus_exporter_endpoint = "0.0.0.0:9184"` (publish it on '
    "127.0.0.1 or a private network only) and scrape it with Prometheus.",
)
def exporter_configured(ctx: HostContext) -> Outcome:
    endpoint = ctx.settings.signer.prometheus_exporter_endpoint
    if endpoint:
        return passed(f"prometheus_exporter_endpoint = {endpoint}")
    if ctx.settings.audit.metrics_url:
        return passed(f"metrics scraped from audit.metrics_url {ctx.settings.audit.metrics_url}")
    return failed("the signer's prometheus_exporter_endpoint is not set: it exports no metrics")


@check(
    "MON-002",
    area=AREA,
    title="Metrics endpoint answers in the Prometheus text format",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A configured exporter that does not answer (signer down, wrong port, something "
    "else on the port) leaves Prometheus blind.",
    remediation="Check that the signer runs and that the exporter address is reachable from "
    "this host (e.g. publish 127.0.0.1:9184:9184), or set audit.metrics_url.",
)
def endpoint_answers(ctx: HostContext) -> Outcome:
    try:
        scrape = first_scrape(ctx)
    except (Unreachable, Malformed) as exc:
        return failed(str(exc))
    count = sum(len(v) for v in scrape.samples.values())
    return passed(f"{metrics_url(ctx)} answered {count} samples", samples=count)


@check(
    "MON-003",
    area=AREA,
    title="The signer's own metrics are present",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale='The endpoint must be the signer\'s (series labelled app="signer"), exporting the '
    "block and peer series the alert rules use.",
    remediation="Point prometheus_exporter_endpoint / audit.metrics_url at the sBTC signer's "
    "exporter; upgrade a signer too old to export blocks_observed_total and peers_connected.",
)
def signer_metrics_present(ctx: HostContext) -> Outcome:
    def judge(scrape: Scrape) -> Outcome:
        missing = [n for n in (BLOCK_COUNTER, PEERS_GAUGE) if not scrape.signer_values(n)]
        if missing:
            return failed(f'no app="signer" series named {", ".join(missing)}')
        return passed(f"{BLOCK_COUNTER} and {PEERS_GAUGE} exported by the signer")

    return _needs_endpoint(ctx, judge)


@check(
    "MON-004",
    area=AREA,
    title="The signer is connected to peers",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A signer with no peers cannot take part in signing rounds or DKG.",
    remediation="Check the P2P port (4122) is reachable from the other signers and the seeds "
    "in signer.p2p.seeds; look for connection errors in the signer's logs.",
)
def peers_connected(ctx: HostContext) -> Outcome:
    def judge(scrape: Scrape) -> Outcome:
        values = [value for _, value in scrape.signer_values(PEERS_GAUGE)]
        if not values:
            return skipped(f"no {PEERS_GAUGE} series (see MON-003)")
        peers = int(max(values))
        needed = _peers_needed(ctx)
        if peers == 0:
            return failed("peers_connected = 0: the signer is isolated", peers=peers)
        if needed is not None and peers < needed:
            return warned(
                f"peers_connected = {peers}, below the {needed} needed to reach the signing "
                "threshold with this signer",
                peers=peers,
            )
        return passed(f"peers_connected = {peers}", peers=peers)

    return _needs_endpoint(ctx, judge)


def _peers_needed(ctx: HostContext) -> int | None:
    try:
        config = signer_info(ctx).get("config") or {}
    except (Skip, EvidenceError):
        return None
    required = config.get("bootstrap_signatures_required") if isinstance(config, dict) else None
    return int(required) - 1 if isinstance(required, int) and required > 1 else None


@dataclass(frozen=True)
class Baseline:
    """Counter values to compare the current scrape with, and how long ago they were taken."""

    blocks: dict[str, float]
    seconds_ago: float
    label: str


def _baseline(ctx: HostContext, url: str, first: Scrape) -> tuple[Baseline, dict[str, float]]:
    """The previous audit's scrape when usable, else a second scrape after the interval.

    Returns (older, newer) block counters. A previous scrape from `interval` to
    PREVIOUS_SCRAPE_MAX_AGE_S ago is better evidence than two scrapes a second apart (Bitcoin
    blocks come every ~10 minutes) and spares the wait.
    """
    interval = ctx.settings.audit.metrics_interval_s
    current = first.by_label(BLOCK_COUNTER, "blockchain")
    previous = read_state(ctx, SCRAPE_STATE)
    ago = time.time() - float(previous.get("at", 0))
    blocks = previous.get("blocks")
    same_source = previous.get("url") == url
    if isinstance(blocks, dict) and same_source and interval <= ago <= PREVIOUS_SCRAPE_MAX_AGE_S:
        write_state(ctx, SCRAPE_STATE, {"url": url, "at": time.time(), "blocks": current})
        older = {str(k): float(v) for k, v in blocks.items()}
        return Baseline(older, ago, f"since the previous audit {_span(ago)} ago"), current
    later = second_scrape(ctx).by_label(BLOCK_COUNTER, "blockchain")
    write_state(ctx, SCRAPE_STATE, {"url": url, "at": time.time(), "blocks": later})
    return Baseline(current, interval, f"within {interval:g}s"), later


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@check(
    "MON-005",
    area=AREA,
    title="Block counters advance between two scrapes",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="blocks_observed_total moving proves the signer is processing the chains now, not "
    "only that its process answers. Stacks blocks arrive every few seconds, Bitcoin blocks "
    "every ~10 minutes: no Bitcoin block for 3 hours means the signer stopped following.",
    remediation="If the counters stay still, check the Stacks node's events observer points at "
    "the signer (NODE-006), the signer's Bitcoin RPC polling, and the signer's logs.",
)
def counters_advance(ctx: HostContext) -> Outcome:
    def judge(first: Scrape) -> Outcome:
        if not first.by_label(BLOCK_COUNTER, "blockchain"):
            return skipped(f"no {BLOCK_COUNTER} series (see MON-003)")
        baseline, after = _baseline(ctx, metrics_url(ctx), first)
        deltas = {c: after.get(c, 0.0) - v for c, v in baseline.blocks.items()}
        data: dict[str, Any] = {"deltas": deltas, "span_s": round(baseline.seconds_ago, 3)}
        if any(delta < 0 for delta in deltas.values()):
            return warned(f"block counters went down {baseline.label}: the signer restarted",
                          **data)  # fmt: skip
        moving = sorted(chain for chain, delta in deltas.items() if delta > 0)
        if "bitcoin" not in moving and baseline.seconds_ago >= BITCOIN_STALL_S:
            return failed(f"no Bitcoin block observed {baseline.label}", **data)
        if not moving:
            return warned(
                f"no block observed {baseline.label} ({', '.join(sorted(deltas))}); re-run "
                "later (the next audit compares with this one) or watch the alert rules",
                **data,
            )
        shown = ", ".join(f"{c} +{deltas[c]:g}" for c in moving)
        return passed(f"blocks observed {baseline.label}: {shown}", **data)

    return _needs_endpoint(ctx, judge)


@check(
    "MON-006",
    area=AREA,
    title="Metrics port not exposed beyond what the firewall allows",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The reference compose publishes 9184 on every interface; docker-published ports "
    "bypass the host firewall, so the signer's metrics (peers, rounds, build) become public.",
    remediation="Publish the exporter on 127.0.0.1 (`127.0.0.1:9184:9184`) or a private "
    "address only, or drop it in DOCKER-USER; let Prometheus scrape over a private network.",
)
def metrics_port_exposure(ctx: HostContext) -> Outcome:
    endpoint = skip_unless(
        ctx.settings.signer.prometheus_exporter_endpoint,
        "the signer's prometheus_exporter_endpoint is not configured",
    )
    port = urlsplit(f"//{endpoint.split('://')[-1]}").port or DEFAULT_METRICS_PORT
    allowed = {number for number, proto in allowed_ports(ctx) if proto == "tcp"}
    if port in allowed:
        return passed(f"metrics port {port} is in the allowed inbound set by policy")
    view = _firewall(ctx)
    exposed = _published_publicly(ctx, port)
    if exposed:
        if view is not None and (view.docker_user_all or port in (view.docker_user_ports or ())):
            return passed(f"metrics port {port} is published but dropped in DOCKER-USER")
        return warned(
            f"metrics port {port} published on all interfaces (docker bypasses the host "
            f"firewall): {'; '.join(exposed)}",
            published=exposed,
        )
    host = endpoint.split("://")[-1].rpartition(":")[0].strip("[]")
    if host.startswith("127.") or host in ("::1", "localhost"):
        return passed(f"exporter binds {endpoint} (loopback only)")
    if view is None:
        return passed(
            f"metrics port {port} is not published by docker; the host firewall could not be "
            "read (see FW-001)"
        )
    opened = [a.describe() for a in view.allows if a.port in (None, port) and a.protocol != "udp"]
    if opened:
        return warned(f"the firewall ({view.backend}) accepts port {port}: {'; '.join(opened)}")
    if not view.v4_deny:
        return warned(f"no default-deny inbound policy ({view.backend}): port {port} is open")
    return passed(f"metrics port {port} is closed by the default-deny firewall ({view.backend})")


def _firewall(ctx: HostContext) -> FirewallView | None:
    """The firewall area's view of the rules (None when it cannot be read)."""
    try:
        return firewall_view(ctx)
    except (Skip, EvidenceError):
        return None


def _published_publicly(ctx: HostContext, port: int) -> list[str]:
    return [
        p.describe()
        for p in published_ports(compose_files_if_configured(ctx))
        if (p.published == port or (p.published is None and p.target == port))
        and not p.loopback
        and p.protocol == "tcp"
    ]


# -- the signer's /info ---------------------------------------------------------------------


def _info_or_fail(ctx: HostContext) -> dict[str, Any] | Outcome:
    return failed_if_unreachable(
        lambda: signer_info(ctx),
        "Check the signer runs and its event observer port (8801) is "
        "reachable from this host (published on 127.0.0.1 only).",
    )


def _section(info: dict[str, Any], name: str) -> dict[str, Any]:
    value = info.get(name)
    return value if isinstance(value, dict) else {}


def _height(tip: Any) -> int | None:
    if isinstance(tip, dict) and isinstance(tip.get("block_height"), int):
        return int(tip["block_height"])
    return None


@check(
    "MON-007",
    area=AREA,
    title="Signer's chain tips match its nodes'",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The signer's GET /info reports its own Bitcoin and Stacks tips next to its "
    "nodes'; a signer more than a block or two behind is not processing blocks.",
    remediation="Check the signer's logs for RPC or event errors, that the Stacks node's "
    "events observer points at the signer, and the database's health.",
)
def tips_in_sync(ctx: HostContext) -> Outcome:
    info = _info_or_fail(ctx)
    if isinstance(info, Outcome):
        return info
    tolerance = ctx.settings.audit.tip_tolerance_blocks
    problems: list[str] = []
    shown: list[str] = []
    data: dict[str, Any] = {}
    for chain in ("bitcoin", "stacks"):
        section = _section(info, chain)
        mine, node = _height(section.get("signer_tip")), _height(section.get("node_tip"))
        data[chain] = {"signer_tip": mine, "node_tip": node}
        if mine is None or node is None:
            missing = "the signer's" if mine is None else "the node's"
            problems.append(f"{chain}: {missing} tip is unknown")
        elif node - mine > tolerance or mine - node > tolerance:
            problems.append(f"{chain}: signer at {mine}, node at {node}")
        else:
            shown.append(f"{chain} {mine}/{node}")
    if problems:
        return failed("; ".join(problems), **data)
    return passed(f"tips within {tolerance} blocks: {', '.join(shown)}", **data)


def _key(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower().removeprefix("0x")


@check(
    "MON-008",
    area=AREA,
    title="Signer's DKG key equals the registry's aggregate key",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="dkg.current_aggregate_key (the signer's newest DKG shares) must be the key in the "
    "sbtc-registry contract: the same comparison the docs use to verify backups.",
    remediation="If the contract has a newer key, this signer missed a DKG round: restore its "
    "database from the newest verified backup or contact the other signers; never run two "
    "signers with the same key.",
)
def dkg_matches_contract(ctx: HostContext) -> Outcome:
    info = _info_or_fail(ctx)
    if isinstance(info, Outcome):
        return info
    dkg = _section(info, "dkg")
    current, contract = (
        _key(dkg.get("current_aggregate_key")),
        _key(dkg.get("contract_aggregate_key")),
    )
    data = {"current": current, "contract": contract, "rounds": dkg.get("rounds")}
    if current is None and contract is None:
        return warned("no DKG has run yet (no key in the signer or the contract)", **data)
    if contract is None:
        return warned("the signer could not read the registry's key (contract key null)", **data)
    if current is None:
        return failed(
            f"the registry's key is {contract} but the signer holds no DKG shares", **data
        )
    if current != contract:
        return failed(f"signer's key {current} differs from the registry's {contract}", **data)
    return passed(f"aggregate key {current} matches the registry", **data)


@check(
    "MON-009",
    area=AREA,
    title="Newest backup holds the signer's current DKG key",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="DKG shares exist only in the signer's database: after a new DKG round, every "
    "backup taken before it cannot restore a signer that can sign.",
    remediation="Take a backup now (`sbtc-ops backup`) and verify it (`sbtc-ops verify`).",
)
def backup_has_current_key(ctx: HostContext) -> Outcome:
    if not backup_configured(ctx):
        raise Skip("no backup storage configured (backup.local_dir / backup.s3.url)")
    info = _info_or_fail(ctx)
    if isinstance(info, Outcome):
        return skipped(f"no signer key to compare (see MON-007): {info.detail}")
    dkg = _section(info, "dkg")
    current = _key(dkg.get("current_aggregate_key"))
    if current is None:
        raise Skip("the signer holds no DKG key yet")
    newest = _newest_complete_backup(ctx)
    if newest is None:
        return failed("no complete backup exists: back up urgently", current=current)
    backed_up = _key(newest.get("newest_verified_aggregate_key"))
    data = {"current": current, "backup": newest["id"], "backup_key": backed_up}
    if backed_up != current:
        return failed(
            f"the signer's key {current} is newer than the newest backup {newest['id']} "
            f"(which holds {backed_up or 'no verified key'}): back up urgently",
            **data,
        )
    return passed(f"backup {newest['id']} holds the current key {current}", **data)


def _newest_complete_backup(ctx: HostContext) -> dict[str, Any] | None:
    complete = [row for row in backup_rows(ctx) if row.get("state") != "incomplete"]
    return complete[0] if complete else None
