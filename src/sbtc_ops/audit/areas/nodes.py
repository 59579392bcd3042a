"""Dedicated downstream nodes: Bitcoin Core and the Stacks node synced, dedicated, big enough.

Evidence: Bitcoin Core JSON-RPC (``getblockchaininfo``, ``getnetworkinfo``, ``getindexinfo``)
at ``audit.bitcoin_rpc_url`` (default: the signer's first ``bitcoin.rpc_endpoints``), the
Stacks node's ``GET /v2/info`` at ``audit.stacks_node_url`` (default: the first configured
``stacks.endpoints``), the node's ``Config.toml`` (``audit.stacks_node_config``),
``/proc/cpuinfo``, ``/proc/meminfo`` and ``df`` on ``audit.chainstate_paths``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
from sbtc_ops.audit.netsource import failed_if_unreachable
from sbtc_ops.host.nodes import (
    RpcError,
    bitcoin_rpc,
    observers,
    signer_observers,
    stacks_info,
    stacks_node_config,
)

AREA = "nodes"
SECTION = "Dedicated Bitcoin and Stacks nodes, minimum hardware"

GB = 1000**3
TB = 1000**4


@dataclass(frozen=True)
class Requirement:
    cpus: int
    memory_bytes: int
    disk_bytes: int
    source: str


# Published minimums. The Stacks docs' "Run a signer" page (docs.stacks.co/operate/run-a-signer,
# "Minimum system requirements") asks 4 vCPU, 16 GB RAM and 1.5 TB of storage (1 TB for the
# Bitcoin node, 500 GB for the Stacks node) for a signer host with its Stacks and Bitcoin
# nodes; the sBTC signer page (docs.stacks.co/operate/run-a-sbtc-signer, "Minimum System
# Requirements") adds 2 CPU, 4 GB memory and 50 GB storage "in addition to" those.
NODES_BASELINE = Requirement(
    4, 16 * GB, 1500 * GB, "docs.stacks.co/operate/run-a-signer (Minimum system requirements)"
)
SBTC_SIGNER_EXTRA = Requirement(
    2, 4 * GB, 50 * GB, "docs.stacks.co/operate/run-a-sbtc-signer (Minimum System Requirements)"
)
FULL_HOST = Requirement(
    NODES_BASELINE.cpus + SBTC_SIGNER_EXTRA.cpus,
    NODES_BASELINE.memory_bytes + SBTC_SIGNER_EXTRA.memory_bytes,
    NODES_BASELINE.disk_bytes + SBTC_SIGNER_EXTRA.disk_bytes,
    f"{NODES_BASELINE.source} + {SBTC_SIGNER_EXTRA.source}",
)
# MemTotal excludes what firmware and the kernel reserve: a "16 GB" machine shows ~15.6 GiB.
MEMORY_SLACK = 0.9
MIN_BITCOIN_VERSION = 250000  # "You will need bitcoind version 25 or higher" (sBTC signer docs)
MIN_VERIFICATION_PROGRESS = 0.9999
LOW_FREE_FRACTION = 0.10
RPC_IN_WARMUP = -28
BITCOIN_CHAINS = {
    "mainnet": ("main",),
    "testnet": ("test", "testnet4", "signet"),
    "devnet": ("regtest",),
}
STACKS_NETWORK_IDS = {"mainnet": (1,), "testnet": (0x80000000,), "devnet": (0x80000000, 1)}


# -- Bitcoin Core RPC -----------------------------------------------------------------------


def _bitcoin_or_fail(ctx: HostContext, method: str) -> dict[str, Any] | Outcome:
    try:
        return failed_if_unreachable(
            lambda: bitcoin_rpc(ctx, method),
            "Start Bitcoin Core (or fix audit.bitcoin_rpc_url) and re-run.",
        )
    except RpcError as exc:
        if exc.code == RPC_IN_WARMUP:
            return warned(f"{exc} (the node is starting)", "Wait for the node to finish starting.")
        raise


@check(
    "NODE-001",
    area=AREA,
    title="Bitcoin node is synced, unpruned, on the right chain",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The signer trusts its Bitcoin node for deposits, sweeps and the blocks it signs "
    "over; a node still syncing, on another chain or pruned gives it a wrong or partial view.",
    remediation="Let Bitcoin Core finish initial block download; run it with prune=0 and the "
    "chain of the signer's network; check its peers and disk if headers run ahead of blocks.",
)
def bitcoin_synced(ctx: HostContext) -> Outcome:
    info = _bitcoin_or_fail(ctx, "getblockchaininfo")
    if isinstance(info, Outcome):
        return info
    network = ctx.settings.network
    chain = str(info.get("chain"))
    blocks, headers = int(info.get("blocks", 0)), int(info.get("headers", 0))
    progress = float(info.get("verificationprogress", 0.0))
    data: dict[str, Any] = {
        "chain": chain,
        "blocks": blocks,
        "headers": headers,
        "progress": progress,
    }
    problems = []
    if chain not in BITCOIN_CHAINS[network]:
        problems.append(f"chain is {chain!r}, the signer runs on {network}")
    if info.get("initialblockdownload"):
        problems.append("still in initial block download")
    if progress < MIN_VERIFICATION_PROGRESS:
        problems.append(f"verification progress {progress:.4%}")
    if headers - blocks > 1:
        problems.append(f"{headers - blocks} blocks behind its headers ({blocks}/{headers})")
    if info.get("pruned"):
        problems.append("pruned (the signer needs the full chain)")
    if problems:
        return failed("Bitcoin Core: " + "; ".join(problems), **data)
    return passed(f"Bitcoin Core synced on {chain} at block {blocks}", **data)


@check(
    "NODE-002",
    area=AREA,
    title="Bitcoin Core version 25 or newer",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The sBTC signer documentation requires bitcoind version 25 or higher.",
    remediation="Upgrade Bitcoin Core to a supported release (see REL-003).",
)
def bitcoin_version(ctx: HostContext) -> Outcome:
    info = _bitcoin_or_fail(ctx, "getnetworkinfo")
    if isinstance(info, Outcome):
        return info
    version = int(info.get("version", 0))
    subversion = str(info.get("subversion", ""))
    data: dict[str, Any] = {"version": version, "subversion": subversion}
    if version < MIN_BITCOIN_VERSION:
        return failed(f"Bitcoin Core {subversion or version} is older than 25.0", **data)
    return passed(f"Bitcoin Core {subversion or version}", **data)


@check(
    "NODE-003",
    area=AREA,
    title="Bitcoin Core transaction index enabled and synced",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The sBTC signer documentation requires txindex=1 on the Bitcoin node.",
    remediation="Set txindex=1 in bitcoin.conf (or -txindex) and restart; wait for the index "
    "to sync.",
)
def bitcoin_txindex(ctx: HostContext) -> Outcome:
    info = _bitcoin_or_fail(ctx, "getindexinfo")
    if isinstance(info, Outcome):
        return info
    txindex = info.get("txindex")
    if not isinstance(txindex, dict):
        return failed("Bitcoin Core runs without txindex")
    if not txindex.get("synced"):
        height = txindex.get("best_block_height")
        return warned(f"txindex is still syncing (at block {height})")
    return passed("txindex enabled and synced")


# -- Stacks node ----------------------------------------------------------------------------


def _stacks_or_fail(ctx: HostContext) -> dict[str, Any] | Outcome:
    return failed_if_unreachable(
        lambda: stacks_info(ctx), "Start the Stacks node (or fix audit.stacks_node_url)."
    )


@check(
    "NODE-004",
    area=AREA,
    title="Stacks node is synced with the Bitcoin tip",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The signer reads sBTC state and submits transactions through its Stacks node; a "
    "node behind the Bitcoin tip makes the signer act on old state.",
    remediation="Check the Stacks node's logs, peers and disk; let it catch up (is_fully_synced) "
    "before relying on the signer.",
)
def stacks_synced(ctx: HostContext) -> Outcome:
    info = _stacks_or_fail(ctx)
    if isinstance(info, Outcome):
        return info
    burn = int(info.get("burn_block_height", 0))
    data: dict[str, Any] = {
        "burn_block_height": burn,
        "stacks_tip_height": info.get("stacks_tip_height"),
        "server_version": info.get("server_version"),
    }
    problems = []
    if info.get("is_fully_synced") is False:
        problems.append("reports is_fully_synced = false")
    tolerance = ctx.settings.audit.tip_tolerance_blocks
    try:
        bitcoin_blocks: int | None = int(bitcoin_rpc(ctx, "getblockchaininfo").get("blocks", 0))
    except (Skip, EvidenceError):
        bitcoin_blocks = None
    if bitcoin_blocks is not None:
        data["bitcoin_blocks"] = bitcoin_blocks
        lag = bitcoin_blocks - burn
        if abs(lag) > tolerance:
            problems.append(f"burn block height {burn} vs Bitcoin Core's {bitcoin_blocks}")
    if problems:
        return failed("Stacks node: " + "; ".join(problems), **data)
    against = f" (Bitcoin Core at {bitcoin_blocks})" if bitcoin_blocks is not None else ""
    return passed(f"Stacks node at burn block {burn}{against}", **data)


@check(
    "NODE-005",
    area=AREA,
    title="Stacks node is on the signer's network",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A node of another network answers every read with that network's state.",
    remediation="Point the signer at a Stacks node of its own network (mainnet network_id 1, "
    "parent_network_id 3652501241).",
)
def stacks_network(ctx: HostContext) -> Outcome:
    info = _stacks_or_fail(ctx)
    if isinstance(info, Outcome):
        return info
    network_id = info.get("network_id")
    network = ctx.settings.network
    data: dict[str, Any] = {"network_id": network_id, "server_version": info.get("server_version")}
    if network_id not in STACKS_NETWORK_IDS[network]:
        return failed(f"Stacks node network_id {network_id} is not {network}'s", **data)
    return passed(
        f"Stacks node network_id {network_id} ({network}); "
        f"{info.get('server_version', 'unknown version')}",
        **data,
    )


@check(
    "NODE-006",
    area=AREA,
    title="Stacks node is dedicated to this signer",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The page asks for dedicated nodes: a node that also feeds an API, a stacks-signer "
    "or a miner shares resources and failure modes with the sBTC signer, and every event "
    "observer it waits on can stall block processing.",
    remediation="Keep exactly one [[events_observer]] (endpoint = the signer's event observer, "
    'e.g. sbtc-signer:8801, events_keys = ["<deployer>.sbtc-registry::print"]); run other '
    "consumers on their own node; no miner, mock_mining or pre_nakamoto_mock_signing.",
)
def stacks_dedicated(ctx: HostContext) -> Outcome:
    path, config = stacks_node_config(ctx)
    port, ours = signer_observers(ctx, config)
    every = observers(config)
    others = [o for o in every if o not in ours]
    data: dict[str, Any] = {
        "observers": [str(o.get("endpoint")) for o in every],
        "signer_port": port,
    }
    if not ours:
        return failed(f"{path}: no [[events_observer]] points at the signer (port {port})", **data)
    problems = [f"also feeds {o.get('endpoint')} ({_keys(o)})" for o in others]
    miner = config.get("miner") or {}
    node = config.get("node") or {}
    if miner.get("pre_nakamoto_mock_signing"):
        problems.append("[miner] pre_nakamoto_mock_signing = true")
    for key in ("miner", "mock_mining"):
        if node.get(key):
            problems.append(f"[node] {key} = true")
    deployer = ctx.settings.effective_deployer
    keys = [str(k) for o in ours for k in o.get("events_keys") or []]
    if "*" not in keys and f"{deployer}.sbtc-registry::print" not in keys:
        problems.append(f"the signer's observer does not receive {deployer}.sbtc-registry::print")
    if problems:
        return warned(f"{path}: " + "; ".join(problems), **data)
    return passed(f"{path}: one events observer, the signer's ({ours[0].get('endpoint')})", **data)


def _keys(observer: dict[str, Any]) -> str:
    return ", ".join(str(k) for k in observer.get("events_keys") or []) or "no keys"


# -- hardware -------------------------------------------------------------------------------


def _grade(
    value: float, baseline: float, full: float, unit: str, scale: float, shown: str = ""
) -> tuple[str, str]:
    shown = shown or f"{value / scale:.3g} {unit}"
    need = f"{baseline / scale:g} {unit} for the nodes, {full / scale:g} {unit} with the signer"
    if value < baseline:
        return "fail", f"{shown}; minimum {need}"
    if value < full:
        return "warn", f"{shown}; below {need}"
    return "pass", f"{shown} (minimum {full / scale:g} {unit})"


def _outcome(status: str, text: str, source: str, **data: Any) -> Outcome:
    detail = f"{text} [source: {source}]"
    if status == "fail":
        return failed(detail, **data)
    if status == "warn":
        return warned(detail, **data)
    return passed(text, source=source, **data)


@check(
    "NODE-007",
    area=AREA,
    title="CPU cores meet the published minimum",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The Stacks docs publish minimum CPU for a signer host with its Stacks and Bitcoin "
    "nodes, plus 2 CPU for the sBTC signer.",
    remediation="Give the host at least 6 vCPU (4 for the nodes + 2 for the sBTC signer).",
)
def hardware_cpu(ctx: HostContext) -> Outcome:
    text = ctx.read_text("/proc/cpuinfo")
    cpus = len(re.findall(r"^processor\s*:", text, flags=re.MULTILINE))
    if cpus == 0:
        raise EvidenceError("/proc/cpuinfo lists no processor")
    status, detail = _grade(cpus, NODES_BASELINE.cpus, FULL_HOST.cpus, "CPU", 1)
    return _outcome(status, detail, FULL_HOST.source, cpus=cpus)


@check(
    "NODE-008",
    area=AREA,
    title="Memory meets the published minimum",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The Stacks docs publish minimum memory for a signer host with its nodes (16 GB), "
    "plus 4 GB for the sBTC signer.",
    remediation="Give the host at least 20 GB of RAM (16 GB for the nodes + 4 GB for the signer).",
)
def hardware_memory(ctx: HostContext) -> Outcome:
    text = ctx.read_text("/proc/meminfo")
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, flags=re.MULTILINE)
    if match is None:
        raise EvidenceError("/proc/meminfo has no MemTotal line")
    total = int(match.group(1)) * 1024
    shown = f"MemTotal {total / GB:.1f} GB"
    status, detail = _grade(
        total / MEMORY_SLACK, NODES_BASELINE.memory_bytes, FULL_HOST.memory_bytes, "GB", GB, shown
    )
    return _outcome(status, detail, FULL_HOST.source, mem_total_bytes=total)


@check(
    "NODE-009",
    area=AREA,
    title="Chainstate disks meet the published minimum, with free space",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The Stacks docs publish 1.5 TB for the nodes (1 TB Bitcoin, 500 GB Stacks) plus "
    "50 GB for the signer; a full disk stops the nodes and the signer's database.",
    remediation="Put the chainstate on filesystems totalling at least 1.55 TB and keep at least "
    "10% free; list them in audit.chainstate_paths.",
)
def hardware_disk(ctx: HostContext) -> Outcome:
    paths = ctx.settings.audit.chainstate_paths
    if not paths:
        raise Skip("no chainstate paths configured (audit.chainstate_paths)")
    filesystems: dict[str, tuple[int, int, list[str]]] = {}
    for path in paths:
        result = ctx.run_ok(["df", "-B1", "--output=target,size,avail", str(path)])
        lines = result.stdout.strip().splitlines()
        fields = lines[-1].split() if len(lines) >= 2 else []
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise EvidenceError(f"cannot parse `df` output for {path}")
        target, size, avail = fields[0], int(fields[1]), int(fields[2])
        filesystems.setdefault(target, (size, avail, []))[2].append(str(path))
    total = sum(size for size, _, _ in filesystems.values())
    low = [
        f"{target} {avail / GB:.0f} GB free of {size / GB:.0f} GB"
        for target, (size, avail, _) in filesystems.items()
        if avail < size * LOW_FREE_FRACTION
    ]
    data: dict[str, Any] = {
        "filesystems": {
            t: {"size": s, "avail": a, "paths": p} for t, (s, a, p) in filesystems.items()
        }
    }
    status, detail = _grade(total, NODES_BASELINE.disk_bytes, FULL_HOST.disk_bytes, "TB", TB)
    if low and status == "pass":
        return warned(f"{detail}; low free space: {'; '.join(low)}", **data)
    if low:
        detail += f"; low free space: {'; '.join(low)}"
    return _outcome(status, detail, FULL_HOST.source, **data)
