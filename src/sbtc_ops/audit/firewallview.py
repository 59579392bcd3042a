"""The host's firewall as the audit reads it: `nft -j list ruleset` (also shows iptables-nft
rules), `iptables-save`/`ip6tables-save` (legacy), `ufw status verbose`, and — when auditing a
tree — ufw's own config files, turned into one FirewallView (default policies, accept rules,
DOCKER-USER drops). Shared by the firewall and monitoring areas; defines no checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sbtc_ops.audit.framework import EvidenceError, HostContext, Skip


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
