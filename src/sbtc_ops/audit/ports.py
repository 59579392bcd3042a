"""Port knowledge shared by the firewall checks and the probe: the allowed inbound set.

Allowed inbound set (best-practice page, DEFAULT DENY): the signer's P2P `listen_on` ports,
the SSH port(s), optionally Bitcoin P2P 8333 and Stacks P2P 20444, plus `audit.allowed_ports`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sbtc_ops.audit.framework import CommandTimeout, EvidenceError, HostContext, Skip
from sbtc_ops.audit.sshd import ssh_ports

SIGNER_P2P_DEFAULT = 4122

# Reference ports of a signer host (the main ones: docs/architecture.md, "Signer host facts").
SERVICE_NAMES: dict[int, str] = {
    22: "ssh",
    3032: "blocklist client",
    4122: "signer P2P",
    5432: "PostgreSQL",
    8332: "Bitcoin RPC",
    8333: "Bitcoin P2P",
    8334: "Bitcoin P2P (onion/I2P)",
    8801: "signer event observer",
    9153: "Stacks node metrics",
    9184: "signer metrics",
    20443: "Stacks RPC",
    20444: "Stacks P2P",
    24224: "fluentd/vector log intake",
    28332: "Bitcoin ZMQ",
}
# Reaching these from outside is a direct compromise path: the event observer accepts
# unauthenticated block pushes, RPC/DB carry credentials, ZMQ and log intake are unauthenticated.
CRITICAL_PORTS = frozenset({5432, 8332, 8801, 24224, 28332})
NODE_P2P_PORTS = (8333, 20444)

Port = tuple[int, str]  # (number, "tcp" | "udp")


def listen_on_ports(listen_on: list[str]) -> set[Port]:
    """`tcp://0.0.0.0:4122` → (4122, tcp); `quic-v1://…` is UDP; a missing port is 4122."""
    ports: set[Port] = set()
    for entry in listen_on:
        try:
            parts = urlsplit(entry if "://" in entry else f"tcp://{entry}")
            port = parts.port or SIGNER_P2P_DEFAULT
        except ValueError:
            continue
        ports.add((port, "udp" if parts.scheme.startswith("quic") else "tcp"))
    return ports


def parse_port_spec(spec: str) -> Port:
    number, _, proto = str(spec).strip().partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp") or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"audit.allowed_ports: {spec!r} is not like 8333 or 4122/udp")
    return int(number), proto


def allowed_ports(ctx: HostContext) -> set[Port]:
    def compute() -> set[Port]:
        settings = ctx.settings
        listen_on = settings.signer.listen_on or [f"tcp://0.0.0.0:{SIGNER_P2P_DEFAULT}"]
        allowed = listen_on_ports(listen_on)
        try:
            allowed |= {(port, "tcp") for port in ssh_ports(ctx)}
        except (Skip, EvidenceError, CommandTimeout):
            allowed.add((22, "tcp"))  # sshd's default port
        if settings.audit.allow_node_p2p:
            allowed |= {(port, "tcp") for port in NODE_P2P_PORTS}
        for spec in settings.audit.allowed_ports:
            try:
                allowed.add(parse_port_spec(spec))
            except ValueError as exc:
                raise Skip(str(exc)) from None
        return allowed

    return ctx.memo("ports.allowed", compute)


def describe(ports: set[Port]) -> str:
    return ", ".join(f"{p}/{proto}" for p, proto in sorted(ports))
