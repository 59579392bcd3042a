"""Signer configuration: drift against the running release, the network, the registry, the chain.

The signer accepts unknown keys silently, so a key an upgrade removed or a misspelt one does
nothing and nobody is told (stacks-sbtc/sbtc ``signer/src/config/mod.rs``; the repository's own
mainnet sample still carries ``bitcoin_block_horizon``, which no struct reads). The release
table (``sbtc_ops/signer/releases.toml``) says which keys each release reads and requires.
DKG re-runs when the configured bootstrap set or threshold differ from the registry's, or when
``dkg_min_bitcoin_block_height`` is reached (``transaction_coordinator.rs::should_run_dkg``).
"""

from __future__ import annotations

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
from sbtc_ops.config import PRESETS
from sbtc_ops.host.nodes import bitcoin_height, signer_observers, stacks_node_config
from sbtc_ops.host.signer import db_rows, registry_signer_data, signer_config, signer_endpoints
from sbtc_ops.signer.configkeys import judge_keys
from sbtc_ops.signer.knowledge import load
from sbtc_ops.signer.running import running_version

AREA = "signer-config"
SECTION = "Signer configuration matches the running release and the registry"
SOURCE = "stacks-sbtc/sbtc signer/src/config/default.toml per tag (sbtc_ops/signer/releases.toml)"

# c32 version characters of a deployer address per signer network (SIP-005 versions 22/20
# mainnet, 26/21 testnet); regtest uses testnet addresses.
_DEPLOYER_PREFIXES = {"mainnet": ("SP", "SM"), "testnet": ("ST", "SN"), "regtest": ("ST", "SN")}


def _listed(keys: dict[str, str] | list[str]) -> str:
    if isinstance(keys, dict):
        return ", ".join(f"{k} (removed in {v})" for k, v in keys.items())
    return ", ".join(keys)


@check(
    "CFG-001",
    area=AREA,
    title="No removed or unknown keys in the signer's configuration",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The signer ignores keys it does not read without a word: a key removed by an "
    "upgrade (block_hash_stream_endpoints in v1.1.0, dkg_target_rounds in v1.2.0) or a typo "
    "leaves the operator believing a setting is in force. Source: " + SOURCE,
    remediation="Delete the listed keys (or fix their spelling) in signer-config.toml and the "
    "SIGNER_* environment; check the release notes for what replaced a removed key.",
)
def ignored_keys(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    version, source = running_version(ctx)
    report = judge_keys(view.values, version, load())
    data: dict[str, Any] = {
        "version": version,
        "version_source": source,
        "removed": report.removed,
        "unknown": report.unknown,
        "not_yet": report.not_yet,
    }
    parts = []
    if report.removed:
        parts.append(f"removed keys: {_listed(report.removed)}")
    if report.not_yet:
        later = ", ".join(f"{k} (added in {v})" for k, v in report.not_yet.items())
        parts.append(f"keys of a later release: {later}")
    if report.unknown:
        parts.append(f"unknown keys: {_listed(report.unknown)}")
    if parts:
        return warned(f"signer v{version} ignores " + "; ".join(parts), **data)
    return passed(f"every key is read by signer v{version} ({source})", **data)


@check(
    "CFG-002",
    area=AREA,
    title="Every key the running release requires is set",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A required key that is missing stops the signer at start-up (or after the next "
    "restart, when it comes from an environment that changed). Source: " + SOURCE,
    remediation="Set the listed keys in signer-config.toml or as SIGNER_<SECTION>__<KEY> "
    "variables of the signer's container.",
)
def required_keys(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    version, source = running_version(ctx)
    report = judge_keys(view.values, version, load())
    if report.missing_required:
        return failed(
            f"signer v{version} requires {_listed(report.missing_required)}, not set",
            missing=report.missing_required,
            version=version,
        )
    return passed(f"every key signer v{version} requires is set ({source})", version=version)


@check(
    "CFG-003",
    area=AREA,
    title="Network, deployer and network-specific keys agree",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The signer refuses a deployer of another network, the mainnet sBTC contracts "
    "have one deployer, and bitcoin.fallback_fee fails validation on mainnet "
    "(signer/src/config/mod.rs).",
    remediation="Set signer.network and signer.deployer to the network's values (mainnet: "
    "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4) and drop bitcoin.fallback_fee on mainnet.",
)
def network_consistent(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    network = str(view.get("signer.network") or "")
    deployer = str(view.get("signer.deployer") or "")
    if not network or not deployer:
        raise Skip("signer.network or signer.deployer is not set (see CFG-002)")
    problems = []
    prefixes = _DEPLOYER_PREFIXES.get(network)
    if prefixes is None:
        problems.append(f"signer.network = {network!r} is not mainnet, testnet or regtest")
    elif not deployer.startswith(prefixes):
        problems.append(f"deployer {deployer} is not a {network} address")
    mainnet_deployer = PRESETS["mainnet"].deployer
    if network == "mainnet" and deployer != mainnet_deployer:
        problems.append(f"deployer {deployer} is not the mainnet sBTC deployer {mainnet_deployer}")
    if network == "mainnet" and view.get("bitcoin.fallback_fee") is not None:
        problems.append("bitcoin.fallback_fee is set, which fails validation on mainnet")
    if ctx.settings.network != {"regtest": "devnet"}.get(network, network):
        problems.append(f"sbtc-ops is set to {ctx.settings.network}, the signer to {network}")
    if problems:
        return failed("; ".join(problems), network=network, deployer=deployer)
    return passed(f"{network} with deployer {deployer}", network=network, deployer=deployer)


@check(
    "CFG-004",
    area=AREA,
    title="The private key comes from the environment, not the config file",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="signer-config.toml is mounted into the container, copied into tickets and "
    "backups; the reference deployment passes SIGNER_SIGNER__PRIVATE_KEY from an owner-only "
    ".env instead (docker/mainnet/docker-compose.yml).",
    remediation="Remove signer.private_key from signer-config.toml and pass "
    "SIGNER_SIGNER__PRIVATE_KEY from a chmod 600 .env (or a secret store).",
)
def private_key_source(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    if view.get("signer.private_key") is None:
        raise Skip("signer.private_key is not set in the file or the environment (see CFG-002)")
    where = view.origin.get("signer.private_key", "file")
    if where == "file":
        return warned(f"signer.private_key is written in {view.path}", file=view.path)
    return passed(f"the private key comes from SIGNER_SIGNER__PRIVATE_KEY ({where})")


def _integer(value: Any, key: str) -> int:
    try:
        return int(str(value).replace("_", ""))
    except ValueError:
        raise EvidenceError(f"{key} = {str(value)[:40]!r} is not an integer") from None


def _hex_set(keys: Any) -> list[str]:
    if isinstance(keys, str):
        keys = [k for k in keys.split(",") if k.strip()]
    if not isinstance(keys, list):
        return []
    return sorted(str(k).strip().lower().removeprefix("0x") for k in keys)


def _newest_shares(ctx: HostContext) -> tuple[list[str], int] | None:
    """Signer set and threshold of the newest DKG shares, None when there are none."""
    rows = db_rows(
        ctx,
        "SELECT ARRAY(SELECT encode(k, 'hex') FROM unnest(signer_set_public_keys) AS k), "
        "signature_share_threshold FROM sbtc_signer.dkg_shares "
        "ORDER BY created_at DESC LIMIT 1",
    )
    if not rows:
        return None
    return sorted(rows[0][0]), int(rows[0][1])


@check(
    "CFG-005",
    area=AREA,
    title="Bootstrap signer set and threshold match the registry",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="When bootstrap_signing_set or bootstrap_signatures_required differ from the "
    "registry's current signer data, the signer asks for a new DKG round "
    "(transaction_coordinator.rs should_run_dkg): right during a planned rotation, wrong when "
    "the config is stale (mainnet rotated twice in 2026, docs PRs #1860/#1884, sbtc #2093).",
    remediation="If no rotation is planned, set bootstrap_signing_set and "
    "bootstrap_signatures_required to the registry's values; if one is, coordinate the DKG "
    "round with the other signers and back up as soon as it completes.",
    timeout_s=30,
)
def bootstrap_matches_registry(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    configured = _hex_set(view.get("signer.bootstrap_signing_set"))
    threshold_raw = view.get("signer.bootstrap_signatures_required")
    if not configured or threshold_raw is None:
        raise Skip("bootstrap_signing_set or bootstrap_signatures_required not set (CFG-002)")
    threshold = _integer(threshold_raw, "signer.bootstrap_signatures_required")
    registry = registry_signer_data(ctx)
    on_chain = sorted(k.hex() for k in registry.signer_set)
    data: dict[str, Any] = {
        "config_threshold": threshold,
        "registry_threshold": registry.threshold,
        "only_in_config": sorted(set(configured) - set(on_chain)),
        "only_in_registry": sorted(set(on_chain) - set(configured)),
    }
    if not on_chain:
        return warned("the registry holds no signer set yet (before the first rotation)", **data)
    if configured == on_chain and threshold == registry.threshold:
        return passed(f"{len(on_chain)} signers, threshold {threshold}, as in the registry")
    diff = _describe_difference(data)
    try:
        shares = _newest_shares(ctx)
    except Skip:
        shares = None
    if shares is not None and shares == (configured, threshold):
        return warned(
            f"{diff}; the newest DKG shares already use the configured set: the registry "
            "update (rotate-keys) is pending, or that round failed",
            **data,
        )
    return warned(
        f"{diff}: this signer will ask for a DKG round with its configured set; if no "
        "rotation is planned the config is stale",
        **data,
    )


def _describe_difference(data: dict[str, Any]) -> str:
    parts = []
    if data["only_in_config"]:
        parts.append(f"{len(data['only_in_config'])} configured signer(s) not in the registry")
    if data["only_in_registry"]:
        parts.append(f"{len(data['only_in_registry'])} registry signer(s) not configured")
    if data["config_threshold"] != data["registry_threshold"]:
        parts.append(
            f"threshold {data['config_threshold']} configured, "
            f"{data['registry_threshold']} in the registry"
        )
    return "; ".join(parts)


@check(
    "CFG-006",
    area=AREA,
    title="dkg_min_bitcoin_block_height is not a pending surprise",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Once the Bitcoin chain reaches dkg_min_bitcoin_block_height a DKG round starts "
    "unless one was started after it (should_run_dkg); default.toml says to set it only when "
    "instructed. A height ahead of the chain is a scheduled key rotation.",
    remediation="Keep the key only while a coordinated rotation needs it, and take a backup "
    "right after the round completes (serve's DKG watch does).",
    timeout_s=30,
)
def dkg_min_height(ctx: HostContext) -> Outcome:
    view = signer_config(ctx)
    raw = view.get("signer.dkg_min_bitcoin_block_height")
    if raw is None:
        return passed("not set: no DKG round scheduled by height")
    height = _integer(raw, "signer.dkg_min_bitcoin_block_height")
    tip = bitcoin_height(ctx)
    data: dict[str, Any] = {"dkg_min_bitcoin_block_height": height, "bitcoin_tip": tip}
    if height > tip:
        return warned(
            f"a DKG round will start at Bitcoin height {height}, {height - tip} blocks from the "
            f"tip {tip}",
            **data,
        )
    started = db_rows(
        ctx,
        "SELECT count(*) FROM sbtc_signer.dkg_shares "
        "WHERE dkg_shares_status <> 'failed' AND started_at_bitcoin_block_height >= %s",
        (height,),
    )
    if int(started[0][0]) > 0:
        return passed(f"height {height} reached (tip {tip}) and its DKG round has run", **data)
    return warned(
        f"height {height} reached (tip {tip}) but no DKG round started after it: a round is "
        "pending",
        **data,
    )


REFERENCE_TIMEOUT_MS = 10_000  # docker/mainnet/nodes/stacks/Config.toml.in


@check(
    "CFG-007",
    area=AREA,
    title="The Stacks node's events observer for the signer has a long enough timeout",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="The Stacks node blocks while an events observer is slow and retries a failed "
    "delivery forever (sbtc #1519, #2084); the reference node config gives the signer's "
    "observer timeout_ms = 10_000 (docker/mainnet/nodes/stacks/Config.toml.in). Endpoint and "
    "events_keys are NODE-006.",
    remediation="In the Stacks node's Config.toml, set timeout_ms = 10_000 in the "
    "[[events_observer]] whose endpoint is the signer's event observer, then restart the node.",
)
def events_observer_timeout(ctx: HostContext) -> Outcome:
    path, config = stacks_node_config(ctx)
    port, ours = signer_observers(ctx, config)
    if not ours:
        raise Skip(f"no [[events_observer]] points at the signer (port {port}); see NODE-006")
    timeout = ours[0].get("timeout_ms")
    data = {"endpoint": str(ours[0].get("endpoint")), "timeout_ms": timeout}
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        return warned(f"{path}: the signer's observer sets no timeout_ms", **data)
    if timeout < REFERENCE_TIMEOUT_MS:
        return warned(
            f"{path}: timeout_ms = {timeout}, below the reference {REFERENCE_TIMEOUT_MS}", **data
        )
    return passed(f"{path}: timeout_ms = {timeout} for {data['endpoint']}", **data)


@check(
    "CFG-008",
    area=AREA,
    title="The signer's endpoints reach the nodes, not its own container",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The signer resolves SIGNER_STACKS__ENDPOINTS, SIGNER_BITCOIN__RPC_ENDPOINTS and "
    "its database endpoint inside its own container: on a compose bridge network 127.0.0.1 and "
    "localhost are that container, not the host where the nodes listen, so the signer talks to "
    "nothing (or to whatever else listens in its container).",
    remediation="Name the node's compose service (stacks-blockchain, bitcoin, postgres) or an "
    "address the container can reach (the bridge gateway, e.g. host.docker.internal with "
    "extra_hosts: host-gateway); or run the signer with network_mode: host.",
)
def endpoints_reach_nodes(ctx: HostContext) -> Outcome:
    endpoints = signer_endpoints(ctx)
    if not endpoints:
        raise Skip("the signer's configuration names no Stacks, Bitcoin RPC or database endpoint")
    view = endpoints[0].view
    own = [e for e in endpoints if e.reaches_itself]
    data: dict[str, Any] = {
        "seen_from": view.who,
        "network_mode": view.mode,
        "endpoints": [e.describe() for e in endpoints],
        "loopback_in_container": [e.describe() for e in own],
    }
    if own:
        return failed(
            f"{view.who} ({view.mode} network) reaches itself, not the host, at: "
            + "; ".join(f"{e.setting}={e.url}" for e in own),
            **data,
        )
    return passed(
        f"{len(endpoints)} endpoint(s), as {view.who} ({view.mode}) sees them: "
        + ", ".join(sorted({e.host for e in endpoints})),
        **data,
    )
