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
from dataclasses import dataclass, field
from typing import Any

from sbtc_ops.audit.compose import (
    PublishedPort,
    command_text,
    compose_files,
    compose_files_if_configured,
    published_ports,
)
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

AREA = "firewall"
SECTION = "Strict firewall, DEFAULT DENY"


@dataclass(frozen=True)
class Allow:
    """An accept rule for new inbound connections."""

    port: int | None  # None: every port
    protocol: str  # tcp, udp, any
    source: str | None  # None: from anywhere
    family: str  # ipv4, ipv6, both
    rule: str

    def describe(self) -> str:
        port = "all ports" if self.port is None else f"{self.port}/{self.protocol}"
        return f"{port} from {self.source or 'anywhere'} ({self.family})"


@dataclass
class FirewallView:
    backend: str
    v4_deny: bool
    v6_deny: bool
    allows: list[Allow] = field(default_factory=list)
    # DOCKER-USER: None when absent; else the ports it drops (empty set + all=True: every port).
    docker_user_ports: set[int] | None = None
    docker_user_all: bool = False


# -- nftables --------------------------------------------------------------------------------


def _nft_view(ctx: HostContext) -> FirewallView | None:
    result = ctx.run(["nft", "-j", "list", "ruleset"])
    if not result.ok:
        reason = result.first_error_line()
        if "permitted" in reason.lower():
            raise Skip(f"`nft list ruleset` needs root: {reason}")
        raise Skip(f"`nft -j list ruleset` failed: {reason}")
    try:
        doc = json.loads(result.stdout) if result.stdout.strip() else {"nftables": []}
        items = doc["nftables"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise EvidenceError(
            "`nft -j list ruleset` printed something that is not libnftables JSON"
        ) from None
    return NftRuleset(items).view()


class NftRuleset:
    def __init__(self, items: list[Any]) -> None:
        self.chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rules: dict[tuple[str, str, str], list[list[Any]]] = {}
        self.sets: dict[tuple[str, str, str], list[Any]] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            for kind, body in item.items():
                if not isinstance(body, dict):
                    continue
                key = (str(body.get("family")), str(body.get("table")), str(body.get("name")))
                if kind == "chain":
                    self.chains[key] = body
                elif kind == "rule":
                    chain = (key[0], key[1], str(body.get("chain")))
                    self.rules.setdefault(chain, []).append(list(body.get("expr") or []))
                elif kind == "set":
                    self.sets[key] = list(body.get("elem") or [])

    def view(self) -> FirewallView | None:
        if not self.chains:
            return None
        view = FirewallView("nftables", False, False)
        for key, chain in self.chains.items():
            if chain.get("hook") != "input" or chain.get("type", "filter") != "filter":
                continue
            family = key[0]
            denies = chain.get("policy") == "drop" or self._ends_in_drop(key)
            if denies and family in ("inet", "ip"):
                view.v4_deny = True
            if denies and family in ("inet", "ip6"):
                view.v6_deny = True
            fam = {"inet": "both", "ip": "ipv4", "ip6": "ipv6"}.get(family, family)
            for expr in self._reachable_rules(key, set()):
                view.allows.extend(self._allows(expr, fam, key))
        for key in self.chains:
            if key[2] == "DOCKER-USER":
                view.docker_user_ports, view.docker_user_all = self._docker_user(key)
        return view

    def _ends_in_drop(self, key: tuple[str, str, str]) -> bool:
        rules = self.rules.get(key) or []
        return bool(rules) and _unconditional_verdict(rules[-1]) in ("drop", "reject")

    def _reachable_rules(
        self, key: tuple[str, str, str], seen: set[tuple[str, str, str]]
    ) -> list[list[Any]]:
        """Rules of a chain plus those of chains it jumps to (ufw, docker, custom chains)."""
        if key in seen:
            return []
        seen.add(key)
        found = []
        for expr in self.rules.get(key) or []:
            found.append(expr)
            for entry in expr:
                target = None
                if isinstance(entry, dict):
                    for verb in ("jump", "goto"):
                        if isinstance(entry.get(verb), dict):
                            target = entry[verb].get("target")
                if target:
                    found += self._reachable_rules((key[0], key[1], str(target)), seen)
        return found

    def _ports(self, right: Any, key: tuple[str, str, str]) -> list[int]:
        if isinstance(right, int):
            return [right]
        if isinstance(right, str) and right.startswith("@"):
            return self._ports(self.sets.get((key[0], key[1], right[1:]), []), key)
        if isinstance(right, str):
            return _port_text(right)
        if isinstance(right, list):
            return [p for item in right for p in self._ports(item, key)]
        if isinstance(right, dict):
            if "set" in right:
                return self._ports(right["set"], key)
            if "range" in right:
                low, high = right["range"]
                if isinstance(low, int) and isinstance(high, int) and high - low < 4096:
                    return list(range(low, high + 1))
            if "elem" in right:
                return self._ports(right["elem"].get("val"), key)
        return []

    def _allows(self, expr: list[Any], family: str, key: tuple[str, str, str]) -> list[Allow]:
        if _verdict(expr) != "accept":
            return []
        ports: list[int] = []
        protocol = "any"
        source: str | None = None
        text = json.dumps(expr, sort_keys=True)
        for entry in expr:
            match = entry.get("match") if isinstance(entry, dict) else None
            if not isinstance(match, dict):
                continue
            left, right = match.get("left"), match.get("right")
            payload = left.get("payload") if isinstance(left, dict) else None
            meta = left.get("meta") if isinstance(left, dict) else None
            ct = left.get("ct") if isinstance(left, dict) else None
            if ct or (meta and meta.get("key") in ("iif", "iifname") and _is_lo(right)):
                return []  # established/related traffic or loopback: not new inbound
            if payload and payload.get("field") == "dport":
                ports += self._ports(right, key)
                protocol = str(payload.get("protocol", "any")).replace("th", "any")
            elif payload and payload.get("field") == "saddr":
                source = _address_text(right)
            elif payload and payload.get("protocol") in ("icmp", "icmpv6"):
                return []
            elif meta and meta.get("key") == "l4proto":
                names = right.get("set") if isinstance(right, dict) else [right]
                if all(str(n) in _ICMP for n in names or []):
                    return []
                protocol = str(right) if isinstance(right, str) else "any"
        if not ports:
            return [Allow(None, protocol, source, family, text)]
        return [Allow(port, protocol, source, family, text) for port in sorted(set(ports))]

    def _docker_user(self, key: tuple[str, str, str]) -> tuple[set[int], bool]:
        ports: set[int] = set()
        every = False
        for expr in self.rules.get(key) or []:
            if _verdict(expr) not in ("drop", "reject"):
                continue
            if any(isinstance(entry, dict) and "xt" in entry for entry in expr):
                continue  # an iptables match nft cannot show: do not credit what we cannot read
            matched = []
            for entry in expr:
                match = entry.get("match") if isinstance(entry, dict) else None
                if not isinstance(match, dict) or not isinstance(match.get("left"), dict):
                    continue
                left = match["left"]
                is_port = (left.get("payload") or {}).get("field") == "dport" or (
                    left.get("ct") or {}
                ).get("key") == "proto-dst"
                if is_port:
                    matched += self._ports(match.get("right"), key)
            if matched:
                ports.update(matched)
            else:
                every = True
        return ports, every


def _address_text(value: Any) -> str:
    """nft JSON addresses: "10.0.0.1", {"prefix": {...}}, {"set": [...]}, {"range": [...]}."""
    if isinstance(value, dict):
        if "prefix" in value:
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "set" in value:
            return ", ".join(_address_text(item) for item in value["set"])
        if "range" in value:
            return "-".join(_address_text(item) for item in value["range"])
    return str(value)


_ICMP = {"icmp", "ipv6-icmp", "icmpv6", "1", "58"}
_SERVICES = {"ssh": 22, "http": 80, "https": 443, "domain": 53}


def _port_text(text: str) -> list[int]:
    """Ports nft prints as text: "22", "ssh", or "0x208c [invalid type]" (ct proto-dst)."""
    token = text.split()[0] if text.split() else ""
    try:
        return [int(token, 16) if token.startswith("0x") else int(token)]
    except ValueError:
        return [_SERVICES[token]] if token in _SERVICES else []


def _verdict(expr: list[Any]) -> str | None:
    for entry in expr:
        if isinstance(entry, dict):
            for verdict in ("accept", "drop", "reject"):
                if verdict in entry:
                    return verdict
    return None


def _unconditional_verdict(expr: list[Any]) -> str | None:
    harmless = {"counter", "log", "limit"}
    if any(isinstance(e, dict) and not (set(e) <= harmless | {"drop", "reject"}) for e in expr):
        return None
    return _verdict(expr)


def _is_lo(value: Any) -> bool:
    return value in ("lo", 1) or (isinstance(value, dict) and value.get("set") in (["lo"], [1]))


# -- iptables --------------------------------------------------------------------------------


def _iptables_view(ctx: HostContext) -> FirewallView | None:
    v4 = ctx.run_ok(["iptables-save"]).stdout
    try:
        v6 = ctx.run_ok(["ip6tables-save"]).stdout
    except Skip:
        v6 = ""
    if "*filter" not in v4 and "*filter" not in v6:
        return None
    view = FirewallView("iptables", _iptables_denies(v4), _iptables_denies(v6))
    for family, text in (("ipv4", v4), ("ipv6", v6)):
        rules = _iptables_rules(text)
        for rule in _iptables_reachable(rules, "INPUT", set()):
            view.allows.extend(_iptables_allows(rule, family))
        if family == "ipv4" and "DOCKER-USER" in rules:
            view.docker_user_ports, view.docker_user_all = _iptables_docker_user(
                rules["DOCKER-USER"]
            )
    return view


def _filter_table(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("*"):
            inside = line.strip() == "*filter"
        elif line.strip() == "COMMIT":
            inside = False
        elif inside:
            lines.append(line.strip())
    return lines


def _iptables_denies(text: str) -> bool:
    lines = _filter_table(text)
    if any(re.match(r"^:INPUT (DROP|REJECT)\b", line) for line in lines):
        return True
    rules = [line for line in lines if line.startswith("-A INPUT ")]
    return bool(rules) and re.fullmatch(r"-A INPUT -j (DROP|REJECT)( .*)?", rules[-1]) is not None


def _iptables_rules(text: str) -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for line in _filter_table(text):
        if line.startswith("-A "):
            chain = line.split()[1]
            rules.setdefault(chain, []).append(line)
    return rules


def _iptables_reachable(rules: dict[str, list[str]], chain: str, seen: set[str]) -> list[str]:
    if chain in seen:
        return []
    seen.add(chain)
    found = []
    for rule in rules.get(chain, []):
        found.append(rule)
        target = re.search(r" -[jg] (\S+)", rule)
        if target and target.group(1) in rules:
            found += _iptables_reachable(rules, target.group(1), seen)
    return found


def _iptables_ports(rule: str) -> list[int]:
    ports: list[int] = []
    for match in re.finditer(r"--(?:dport|dports|ctorigdstport) (\S+)", rule):
        for part in match.group(1).split(","):
            low, _, high = part.partition(":")
            if low.isdigit() and (not high or high.isdigit()):
                ports += range(int(low), int(high or low) + 1)
    return ports


def _iptables_allows(rule: str, family: str) -> list[Allow]:
    if not re.search(r" -j ACCEPT\b", rule):
        return []
    if re.search(r"--(ct)?state \S*(ESTABLISHED|RELATED)", rule) or " -i lo " in f"{rule} ":
        return []
    if re.search(r" -p (icmp|ipv6-icmp|icmpv6)\b", rule):
        return []
    proto = re.search(r" -p (\w+)", rule)
    source = re.search(r" -s (\S+)", rule)
    protocol = proto.group(1) if proto else "any"
    origin = source.group(1) if source else None
    ports = _iptables_ports(rule)
    if not ports:
        return [Allow(None, protocol, origin, family, rule)]
    return [Allow(port, protocol, origin, family, rule) for port in ports]


def _iptables_docker_user(rules: list[str]) -> tuple[set[int], bool]:
    ports: set[int] = set()
    every = False
    for rule in rules:
        if not re.search(r" -j (DROP|REJECT)\b", rule):
            continue
        matched = _iptables_ports(rule)
        if matched:
            ports.update(matched)
        else:
            every = True
    return ports, every


# -- ufw -------------------------------------------------------------------------------------


def _ufw_view(ctx: HostContext) -> FirewallView | None:
    try:
        text = ctx.run_ok(["ufw", "status", "verbose"]).stdout
    except Skip:
        offline = _ufw_config_view(ctx)
        if offline is None:
            raise
        return offline
    if "Status: active" not in text:
        return FirewallView("ufw (inactive)", False, False)
    default = re.search(r"Default: (\w+) \(incoming\)", text)
    denies = bool(default) and default is not None and default.group(1) in ("deny", "reject")
    view = FirewallView("ufw", denies, denies)
    for line in text.splitlines():
        match = re.match(r"^(\d+)(?::\d+)?(?:/(tcp|udp))?( \(v6\))?\s+ALLOW IN\s+(.+)$", line)
        if match:
            origin = match.group(4).replace("(v6)", "").strip()
            view.allows.append(
                Allow(
                    int(match.group(1)),
                    match.group(2) or "any",
                    None if origin == "Anywhere" else origin,
                    "ipv6" if match.group(3) else "ipv4",
                    line.strip(),
                )
            )
    return view


def _ufw_config_view(ctx: HostContext) -> FirewallView | None:
    """Offline (--root) evidence: ufw enabled with a DROP input policy."""
    conf = ctx.read_optional("/etc/ufw/ufw.conf")
    defaults = ctx.read_optional("/etc/default/ufw")
    if conf is None or defaults is None:
        return None
    enabled = re.search(r"^\s*ENABLED\s*=\s*yes", conf, re.MULTILINE) is not None
    policy = re.search(r'^\s*DEFAULT_INPUT_POLICY\s*=\s*"?(\w+)', defaults, re.MULTILINE)
    denies = enabled and policy is not None and policy.group(1) in ("DROP", "REJECT")
    return FirewallView("ufw (config files)", denies, denies)


# -- the firewall as a whole -----------------------------------------------------------------


def firewall_view(ctx: HostContext) -> FirewallView:
    return ctx.memo("firewall.view", lambda: _firewall_view(ctx))


def _firewall_view(ctx: HostContext) -> FirewallView:
    reasons = []
    ran = []
    for reader in (_nft_view, _iptables_view, _ufw_view):
        try:
            view = reader(ctx)
        except Skip as exc:
            reasons.append(str(exc))
            continue
        if view is not None:
            return view
        ran.append(reader.__name__.strip("_").removesuffix("_view"))
    if ran:
        return FirewallView(f"{', '.join(ran)}: no rules loaded", False, False)
    if all("not installed" in r or "not run" in r for r in reasons):
        raise Skip("no firewall tool found: " + "; ".join(reasons))
    raise Skip("firewall rules not readable: " + "; ".join(reasons))


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
