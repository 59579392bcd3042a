"""`sbtc-ops audit firewall --probe HOST[:PORTS]`: an active TCP connect scan from here.

The local firewall checks read rules; this asks the network what a peer at this vantage
point can actually reach. Bounded: at most MAX_PORTS ports, a per-connection timeout and an
overall deadline, so it never turns into an open-ended scan.
"""

from __future__ import annotations

import errno
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sbtc_ops.audit.framework import Check, HostContext, Outcome, Severity, failed, passed, warned
from sbtc_ops.audit.ports import CRITICAL_PORTS, SERVICE_NAMES, allowed_ports
from sbtc_ops.errors import UsageError

MAX_PORTS = 1024
DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_DEADLINE_S = 20.0
MAX_PARALLEL = 64


@dataclass(frozen=True)
class ProbeSpec:
    """What the command line asked for: HOST[:PORTS] and the time bounds."""

    target: str
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    deadline_s: float = DEFAULT_DEADLINE_S


@dataclass(frozen=True)
class ProbeTarget:
    host: str
    ports: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_target(text: str, default_ports: tuple[int, ...]) -> ProbeTarget:
    """HOST, HOST:PORTS, [V6]:PORTS; PORTS like 22,4122,9000-9010."""
    text = text.strip()
    if not text:
        raise UsageError("--probe needs a host, e.g. --probe 203.0.113.5:22,4122,8801")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""  # a bare IPv6 address or a plain host name
    if not host:
        raise UsageError(f"--probe {text!r}: no host")
    ports = parse_ports(port_text) if port_text else default_ports
    return ProbeTarget(host, ports)


def parse_ports(text: str) -> tuple[int, ...]:
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low_text, _, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise UsageError(f"--probe: {part!r} is not a port or a port range") from None
        if not (1 <= low <= high <= 65535):
            raise UsageError(f"--probe: {part!r} is outside 1-65535")
        if high - low + 1 + len(ports) > MAX_PORTS:
            raise UsageError(f"--probe: at most {MAX_PORTS} ports per run")
        ports.update(range(low, high + 1))
    if not ports:
        raise UsageError("--probe: no ports given")
    return tuple(sorted(ports))


def resolve(host: str) -> tuple[int, str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--probe: cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return family, str(address[0])


def connect_state(family: int, address: str, port: int, timeout: float) -> str:
    """'open', 'closed' (refused: a reject rule or no listener) or 'filtered' (no answer)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            code = sock.connect_ex((address, port))
        except (TimeoutError, OSError):
            return "filtered"
    if code == 0:
        return "open"
    if code == errno.ECONNREFUSED:
        return "closed"
    return "filtered"


def scan(
    target: ProbeTarget,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> dict[int, str]:
    family, address = resolve(target.host)
    stop_at = time.monotonic() + deadline_s
    states: dict[int, str] = {}

    def one(port: int) -> None:
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            states[port] = "not probed"
            return
        states[port] = connect_state(family, address, port, min(connect_timeout_s, remaining))

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(target.ports))) as pool:
        list(pool.map(one, target.ports))
    return states


def _by_state(states: dict[int, str]) -> str:
    """'open 4122; refused 22; filtered 8801, 9184' (long lists shortened)."""
    parts = []
    for state in ("open", "closed", "filtered", "not probed"):
        ports = sorted(p for p, s in states.items() if s == state)
        if ports:
            shown = ", ".join(str(p) for p in ports[:12]) + (" …" if len(ports) > 12 else "")
            parts.append(f"{'refused' if state == 'closed' else state} {shown}")
    return "; ".join(parts)


def default_probe_ports(ctx_allowed: set[int]) -> tuple[int, ...]:
    return tuple(sorted(set(SERVICE_NAMES) | ctx_allowed))


def probe_check(target: ProbeTarget, *, connect_timeout_s: float, deadline_s: float) -> Check:
    """The probe as a check, so it renders, scores and sets exit codes like the others."""

    def run(ctx: HostContext) -> Outcome:
        allowed = {port for port, proto in allowed_ports(ctx) if proto == "tcp"}
        states = scan(target, connect_timeout_s=connect_timeout_s, deadline_s=deadline_s)
        open_ports = sorted(p for p, s in states.items() if s == "open")
        unexpected = [p for p in open_ports if p not in allowed]
        critical = [p for p in unexpected if p in CRITICAL_PORTS]
        items = [
            {"port": p, "service": SERVICE_NAMES.get(p, "?"), "state": s}
            for p, s in sorted(states.items())
        ]
        summary = {
            state: sum(1 for s in states.values() if s == state)
            for state in ("open", "closed", "filtered", "not probed")
        }
        data: dict[str, Any] = {"target": target.host, "items": items, "summary": summary}
        described = ", ".join(f"{p} ({SERVICE_NAMES.get(p, 'unknown')})" for p in unexpected)
        if critical:
            return failed(
                f"{target.label}: reachable ports outside the allowed set: {described}", **data
            )
        if unexpected:
            return warned(
                f"{target.label}: reachable ports outside the allowed set: {described}", **data
            )
        return passed(f"{target.label}: {_by_state(states)}; every open port is allowed", **data)

    return Check(
        "FW-101",
        "firewall",
        "Ports reachable from the probe point",
        Severity.CRITICAL,
        "Strict firewall, DEFAULT DENY",
        "Rules can be misread and cloud security groups are invisible from the host; a "
        "connect scan from outside shows what an attacker at that vantage point can reach.",
        "Close the listed ports at the host firewall (input and DOCKER-USER chains) and at any "
        "cloud security group; unpublish docker ports that need no outside access.",
        run,
        timeout_s=deadline_s + 10,
    )
