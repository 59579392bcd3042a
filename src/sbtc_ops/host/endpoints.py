"""Endpoints: a URL safe to show, and where an endpoint leads as the process using it sees it.

A URL in the signer's configuration is resolved by the signer, inside its container: on a
compose bridge network `127.0.0.1` and `localhost` are the signer's own container, not the
Docker host where the operator's nodes listen; with `network_mode: host` they are the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sbtc_ops import redact

INVALID_URL = "(invalid URL)"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def public_url(url: str) -> str:
    """The URL without userinfo, query, fragment or trailing `/`: safe for messages, metrics
    labels and pages (any secret left in the path is scrubbed too)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return INVALID_URL
    return redact.scrub(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))


def url_host(url: str) -> str | None:
    """The host an endpoint names (`postgres`, `127.0.0.1`); None when it names none."""
    text = url.strip()
    if "://" not in text:
        text = "tcp://" + text  # `host:port`, the way the signer's config may spell it
    try:
        return urlsplit(text).hostname or None
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the loopback names: the network namespace of the process itself."""
    name = host.strip("[]").lower()
    return name.startswith("127.") or name in ("::1", *LOOPBACK_NAMES)


@dataclass(frozen=True)
class NetworkView:
    """Whose network namespace a process resolves its endpoints in."""

    who: str  # "the host" or "container sbtc-signer"
    own_namespace: bool  # True: loopback is that container, not the host
    mode: str  # compose's network_mode ("bridge" when unset) or "host process"


HOST_VIEW = NetworkView("the host", own_namespace=False, mode="host process")


def container_view(service: str, network_mode: str | None) -> NetworkView:
    """How a compose service's container sees the network. Unset network_mode is compose's
    default project bridge network; `host` shares the host's namespace; `service:x` and
    `container:x` share x's (whose loopback is x's, still not the host's)."""
    mode = (network_mode or "bridge").strip()
    return NetworkView(f"container {service}", own_namespace=mode != "host", mode=mode)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint a process uses, and where it leads from where that process runs."""

    setting: str  # e.g. SIGNER_STACKS__ENDPOINTS
    url: str  # shown form (public_url)
    host: str
    view: NetworkView

    @property
    def reaches_itself(self) -> bool:
        """Loopback inside its own namespace: the endpoint is the container, not the host."""
        return self.view.own_namespace and is_loopback(self.host)

    def describe(self) -> str:
        return f"{self.setting}={self.url} (seen from {self.view.who}, {self.view.mode})"


def endpoints_of(setting: str, value: str, view: NetworkView) -> list[Endpoint]:
    """Each URL of a comma-separated setting, as `view` resolves it."""
    found = []
    for raw in value.split(","):
        host = url_host(raw) if raw.strip() else None
        if host is not None:
            found.append(Endpoint(setting, public_url(raw.strip()), host, view))
    return found
