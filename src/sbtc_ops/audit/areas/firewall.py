"""Firewall: DEFAULT DENY inbound, only the allowed ports, and nothing docker publishes past it.

Evidence, in order of preference: `nft -j list ruleset` (also shows iptables-nft rules),
`iptables-save`/`ip6tables-save` (legacy), `ufw status verbose`, and — when auditing a tree —
ufw's own config files. Lynis checks iptables policies but not nftables policies, and no tool
of its kind connects firewall rules with docker's published ports, which bypass the host's
input chain (docker DNATs them in `nat` and routes them through FORWARD).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sbtc_ops.audit.firewallview import Allow, FirewallView, firewall_view
from sbtc_ops.audit.framework import (
    CommandTimeout,
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
from sbtc_ops.audit.ports import CRITICAL_PORTS, SERVICE_NAMES, Port, allowed_ports, describe
from sbtc_ops.host.compose import (
    PublishedPort,
    command_text,
    compose_files,
    compose_files_if_configured,
    published_ports,
)

AREA = "firewall"
SECTION = "Strict firewall, DEFAULT DENY"


@check(
    "FW-001",
    area=AREA,
    title="Inbound IPv4 default policy is deny",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The page asks for DEFAULT DENY: anything not explicitly allowed must be dropped, "
    "so a service that starts listening by accident is not reachable. Lynis checks iptables "
    "policies but not nftables ones.",
    remediation="Give the input hook a drop policy, e.g. nftables `chain input { type filter "
    "hook input priority 0; policy drop; ct state established,related accept; iif lo accept; "
    "tcp dport { 22, 4122 } accept; }` (or `ufw default deny incoming`).",
)
def ipv4_default_deny(ctx: HostContext) -> Outcome:
    view = firewall_view(ctx)
    if view.v4_deny:
        return passed(f"input is dropped unless allowed ({view.backend})", backend=view.backend)
    return failed(
        f"no input chain drops by default ({view.backend}): new connections to every "
        "listening port are accepted",
        backend=view.backend,
    )


@check(
    "FW-002",
    area=AREA,
    title="Inbound IPv6 default policy is deny",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="An `ip`-family nftables table or an iptables-only ruleset leaves IPv6 open; a "
    "host with a global IPv6 address is then reachable around the IPv4 rules.",
    remediation="Use an `inet` table (covers IPv4 and IPv6) or add the same drop policy to "
    "ip6tables / the `ip6` family.",
)
def ipv6_default_deny(ctx: HostContext) -> Outcome:
    view = firewall_view(ctx)
    if view.v6_deny:
        return passed(f"IPv6 input is dropped unless allowed ({view.backend})")
    addresses = _global_ipv6(ctx)
    if addresses == []:
        return passed(f"IPv6 not default-deny ({view.backend}), but no global IPv6 address")
    where = f" while the host has {', '.join(addresses)}" if addresses else ""
    if not view.v4_deny:
        return failed(f"no IPv6 (nor IPv4) default deny ({view.backend}){where}")
    return warned(f"IPv4 is default-deny but IPv6 is not ({view.backend}){where}")


def _global_ipv6(ctx: HostContext) -> list[str] | None:
    """Global IPv6 addresses from `ip -j addr show`; None when that cannot be told."""
    try:
        result = ctx.run(["ip", "-j", "addr", "show"])
        interfaces = json.loads(result.stdout) if result.ok else None
    except (Skip, CommandTimeout, ValueError):
        return None
    if not isinstance(interfaces, list):
        return None
    return [
        str(info.get("local"))
        for interface in interfaces
        if isinstance(interface, dict)
        for info in interface.get("addr_info") or []
        if isinstance(info, dict)
        and info.get("family") == "inet6"
        and info.get("scope") == "global"
    ]


@check(
    "FW-003",
    area=AREA,
    title="Only the allowed ports are open inbound",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Allowed inbound: the signer's P2P listen_on port, SSH and optionally the nodes' "
    "P2P ports. Every other accept rule widens the attack surface; the event observer, RPC, "
    "database and metrics ports must never be open to the internet.",
    remediation="Remove the accept rules for the listed ports, or restrict them to the "
    "addresses that need them (`ip saddr 10.0.0.0/8 tcp dport 9184 accept`); add ports that "
    "must be open on purpose to audit.allowed_ports.",
)
def allowed_set(ctx: HostContext) -> Outcome:
    view = firewall_view(ctx)
    allowed = allowed_ports(ctx)
    everything = [a for a in view.allows if a.port is None and a.source is None]
    extra = [
        a
        for a in view.allows
        if a.port is not None and a.source is None and not _permitted(a, allowed)
    ]
    restricted = [a for a in view.allows if a.source is not None]
    data: dict[str, Any] = {
        "allowed": describe(allowed),
        "items": [a.describe() for a in everything + extra],
        "restricted": [a.describe() for a in restricted],
        "backend": view.backend,
    }
    if everything:
        return failed(f"an input rule accepts every port: {everything[0].rule[:160]}", **data)
    if not view.v4_deny:
        # Without a drop policy the accept rules restrict nothing: every listening port is
        # reachable, so no list of accepted ports can pass (FW-001 says why).
        beyond = _listed(extra)
        return failed(
            f"no default deny ({view.backend}): every listening port is open inbound, not "
            f"only the allowed set ({data['allowed']})"
            + (f"; also accepted explicitly: {beyond}" if beyond else ""),
            **data,
        )
    if extra:
        critical = [a for a in extra if a.port in CRITICAL_PORTS]
        text = f"open to anywhere beyond the allowed set ({data['allowed']}): {_listed(extra)}"
        return failed(text, **data) if critical else warned(text, **data)
    opened = sorted(
        {
            f"{a.port}/{a.protocol}" + (f" from {a.source}" if a.source else "")
            for a in view.allows
            if a.port is not None
        }
    )
    return passed(
        f"accepted inbound: {', '.join(opened) or 'nothing'} (allowed: {data['allowed']})",
        **data,
    )


def _listed(allows: list[Allow]) -> str:
    return ", ".join(
        f"{a.port}/{a.protocol} ({SERVICE_NAMES.get(a.port or 0, 'unknown')})"
        for a in _unique(allows)
    )


def _unique(allows: list[Allow]) -> list[Allow]:
    seen: dict[tuple[int | None, str], Allow] = {}
    for allow in allows:
        seen.setdefault((allow.port, allow.protocol), allow)
    return list(seen.values())


def _permitted(allow: Allow, allowed: set[Port]) -> bool:
    if allow.protocol in ("tcp", "udp"):
        return (allow.port or 0, allow.protocol) in allowed
    return (allow.port or 0, "tcp") in allowed and (allow.port or 0, "udp") in allowed


# -- docker ----------------------------------------------------------------------------------


def _docker_ps_ports(ctx: HostContext) -> list[PublishedPort]:
    """Live containers' published ports; absent docker or daemon means none known."""
    try:
        result = ctx.run(["docker", "ps", "--format", "{{.Names}}\t{{.Ports}}"])
    except Skip:
        return []
    if not result.ok:
        return []
    ports = []
    for line in result.stdout.splitlines():
        name, _, mappings = line.partition("\t")
        for mapping in mappings.split(","):
            match = re.match(r"\s*(\S+):(\d+)->(\d+)/(\w+)", mapping)
            if match:
                host = match.group(1).strip("[]")
                ports.append(
                    PublishedPort(
                        name,
                        host,
                        int(match.group(2)),
                        int(match.group(3)),
                        match.group(4),
                        "docker ps",
                    )
                )
    return ports


def _exposed_ports(ctx: HostContext) -> tuple[list[PublishedPort], list[str]]:
    sources = []
    ports: list[PublishedPort] = []
    try:
        ports += published_ports(compose_files(ctx))
        sources.append("compose files")
    except Skip:
        pass
    live = _docker_ps_ports(ctx)
    if live:
        sources.append("docker ps")
    seen = {(p.published, p.protocol) for p in ports if p.all_interfaces}
    for port in live:
        if (port.published, port.protocol) not in seen:
            ports.append(port)
    if not sources:
        raise Skip("no compose files configured (docker.compose_files) and no running containers")
    return ports, sources


def _rpc_open_to_all(ctx: HostContext) -> set[str]:
    """Compose services whose bitcoind accepts RPC from any address."""
    names = set()
    for compose in compose_files_if_configured(ctx):
        for name, service in compose.services.items():
            text = command_text(service)
            if re.search(r"-?rpcallowip=(0\.0\.0\.0/0|::/0)", text):
                names.add(name)
    return names


@check(
    "FW-004",
    area=AREA,
    title="Docker publishes no sensitive port past the firewall",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="Docker DNATs published ports before the host's input rules see them, so `ports: "
    "- '8332:8332'` is reachable from the internet whatever ufw or the input chain says; only "
    "rules in the DOCKER-USER chain apply. The reference node compose publishes Bitcoin RPC "
    "(with rpcallowip=0.0.0.0/0), Stacks RPC and metrics on every interface.",
    remediation="Publish internal ports on 127.0.0.1 only (`127.0.0.1:8332:8332`) or not at "
    "all (services reach each other on the compose network), or drop them in DOCKER-USER "
    "(`iptables -I DOCKER-USER -i eth0 -p tcp -m conntrack --ctorigdstport 8332 -j DROP`).",
)
def docker_published(ctx: HostContext) -> Outcome:
    ports, sources = _exposed_ports(ctx)
    allowed = allowed_ports(ctx)
    try:
        view: FirewallView | None = firewall_view(ctx)
    except (Skip, EvidenceError, CommandTimeout):
        view = None  # the published ports are still worth reporting
    filtered_all = view is not None and view.docker_user_all
    filtered = (view.docker_user_ports or set()) if view is not None else set()
    rpc_open = _rpc_open_to_all(ctx)
    exposed = []
    for port in ports:
        number = port.published if port.published is not None else port.target
        if port.loopback or (number, port.protocol) in allowed:
            continue
        if filtered_all or number in filtered:
            continue
        note = SERVICE_NAMES.get(port.target, "")
        if port.target == 8332 and port.service in rpc_open:
            note += ", rpcallowip=0.0.0.0/0"
        exposed.append((port, number, note))
    items = [
        {"published": p.describe(), "service_port": note or "unknown", "source": p.compose_file}
        for p, _, note in exposed
    ]
    data: dict[str, Any] = {"items": items, "sources": sources, "allowed": describe(allowed)}
    if not exposed:
        return passed(
            f"no port outside the allowed set is published on a public interface "
            f"({', '.join(sources)})",
            **data,
        )
    critical = [e for e in exposed if e[0].target in CRITICAL_PORTS or e[1] in CRITICAL_PORTS]
    listed = "; ".join(
        f"{p.describe()} ({note})" if note else p.describe() for p, _, note in exposed
    )
    bypass = "" if view is None or view.docker_user_ports is not None else "; no DOCKER-USER rules"
    text = f"published on all interfaces, bypassing the host firewall: {listed}{bypass}"
    return failed(text, **data) if critical else warned(text, **data)


@check(
    "FW-005",
    area=AREA,
    title="No unexpected listeners on public addresses",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A listener on 0.0.0.0/:: is one firewall mistake away from the internet; "
    "services that only the host needs should bind to 127.0.0.1. Cloud security groups are "
    "not visible from the host: verify them separately (or use --probe from outside).",
    remediation="Bind the listed services to 127.0.0.1 (or a private address), or stop them.",
)
def listeners(ctx: HostContext) -> Outcome:
    result = ctx.run_ok(["ss", "-Htuln"])
    allowed = allowed_ports(ctx)
    unexpected = []
    parsed = 0
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        protocol, state, local = fields[0], fields[1], fields[4]
        if protocol == "tcp" and state != "LISTEN":
            continue
        address, _, port_text = local.rpartition(":")
        if not port_text.isdigit():
            continue
        parsed += 1
        address = address.split("%")[0].strip("[]")
        port = int(port_text)
        if address.startswith(("127.", "::1")) or address == "::ffff:127.0.0.1":
            continue
        if (port, protocol) in allowed or (protocol == "udp" and port in (68, 546)):
            continue
        unexpected.append({"address": address, "port": port, "protocol": protocol})
    if not parsed and result.stdout.strip():
        raise EvidenceError("`ss -Htuln` printed nothing that looks like a socket table")
    if unexpected:
        listed = ", ".join(
            f"{_host(str(u['address']))}:{u['port']}/{u['protocol']}"
            + (f" ({SERVICE_NAMES[u['port']]})" if u["port"] in SERVICE_NAMES else "")
            for u in unexpected
        )
        return warned(f"listening beyond the allowed set: {listed}", items=unexpected)
    return passed(f"{parsed} sockets; public listeners are all in the allowed set")


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@check(
    "FW-006",
    area=AREA,
    title="Bitcoin RPC does not accept every address",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="`rpcallowip=0.0.0.0/0` (as in the reference node compose) lets any host that "
    "reaches port 8332 try the RPC credentials; combined with a published port it is the "
    "whole internet.",
    remediation="Allow only the signer's network, e.g. `-rpcallowip=172.18.0.0/16` (the "
    "compose network) and do not publish 8332, or publish it on 127.0.0.1 only.",
)
def bitcoin_rpc_allowip(ctx: HostContext) -> Outcome:
    open_services = _rpc_open_to_all(ctx)
    compose_files(ctx)  # a Skip when none is configured
    if not open_services:
        return passed("no service sets rpcallowip to every address")
    ports = published_ports(compose_files(ctx))
    public = {
        p.service
        for p in ports
        if p.service in open_services and p.target == 8332 and not p.loopback
    }
    names = ", ".join(sorted(open_services))
    if public:
        return failed(
            f"{names}: rpcallowip=0.0.0.0/0 and RPC 8332 published on all interfaces",
            services=sorted(open_services),
        )
    return warned(
        f"{names}: rpcallowip=0.0.0.0/0 (any container or host that reaches 8332 may try)",
        services=sorted(open_services),
    )
