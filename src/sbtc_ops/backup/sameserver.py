"""Do two libpq connection targets name the same database? For the live-database guard of
`restore`, which must not be bypassed by spelling the same server differently.

Host names compare case-insensitively, with a trailing dot dropped; every way of reaching
this machine (Unix sockets, `localhost`, 127.0.0.0/8, ::1, 0.0.0.0, this host's own names and
addresses, any name resolving to one of those) is one "local" server; ports compare as
numbers (`05499` is 5499); multi-host lists (`h1,h2` with one port each or one for all) and
libpq's defaults (`PGHOST`, `PGPORT`, `PGDATABASE`, the user name) are applied. When in
doubt the answer is "same": a false alarm costs a flag, a miss costs the signer's state.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

LOCAL = "(this machine)"
DEFAULT_PORT = 5432


def same_database(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when the libpq parameters `a` and `b` may reach the same database."""
    if _dbname(a) != _dbname(b):
        return False
    return bool(_endpoints(a) & _endpoints(b))


def _param(params: Mapping[str, Any], key: str, env: str) -> str:
    value = params.get(key)
    if value is None or str(value) == "":
        return os.environ.get(env, "")
    return str(value)


def _dbname(params: Mapping[str, Any]) -> str:
    name = _param(params, "dbname", "PGDATABASE")
    if name:
        return name
    user = _param(params, "user", "PGUSER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry: compare as unknown, i.e. equal
        return ""


def _endpoints(params: Mapping[str, Any]) -> set[tuple[str, int | str]]:
    hostaddrs = _param(params, "hostaddr", "PGHOSTADDR")
    hosts = (hostaddrs or _param(params, "host", "PGHOST")).split(",")
    ports = _param(params, "port", "PGPORT").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return {
        (_host_class(host), _port_number(port)) for host, port in zip(hosts, ports, strict=False)
    }


def _port_number(port: str) -> int | str:
    text = port.strip()
    if not text:
        return DEFAULT_PORT
    try:
        return int(text, 10)
    except ValueError:
        return text  # libpq will refuse it anyway; compare the text


def _host_class(host: str) -> str:
    name = host.strip().lower().rstrip(".")
    if not name or name.startswith("/") or name.startswith("@"):
        return LOCAL  # a Unix socket (directory, or abstract namespace)
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):
        return LOCAL
    addresses = _addresses(name)
    if addresses & _local_addresses() or any(_is_loopback(a) for a in addresses):
        return LOCAL
    return name


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


@lru_cache(maxsize=64)
def _addresses(name: str) -> frozenset[str]:
    """The addresses `name` resolves to (itself when it is an address); empty when unknown."""
    try:
        return frozenset({str(ipaddress.ip_address(name.split("%")[0]))})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


@lru_cache(maxsize=1)
def _local_addresses() -> frozenset[str]:
    """This machine's own addresses, as far as its host name tells."""
    found: set[str] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        found |= _addresses(name.lower())
    return frozenset(address for address in found if address)
