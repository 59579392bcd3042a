"""The nodes and services the signer talks to, as this host reaches them: Bitcoin Core's
JSON-RPC, the Stacks node's `/v2/info` and Config.toml, the signer's own `/info`. Each answer is read once per
context (memo) and shared by every reader."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sbtc_ops.host.context import HostContext, parse_toml
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.http import (
    HttpStatus,
    fetch,
    fetch_json,
    local_source_url,
    loopback_url,
    require_mapping,
)
from sbtc_ops.stacks import api_key_for

# -- Bitcoin Core RPC -----------------------------------------------------------------------


class RpcError(EvidenceError):
    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"Bitcoin Core RPC {method} returned error {code}: {message}")
        self.code = code


def bitcoin_rpc_url(ctx: HostContext) -> str:
    audit = ctx.settings.audit
    if audit.bitcoin_rpc_url is not None:
        return audit.bitcoin_rpc_url.get_secret_value()
    endpoints = ctx.settings.signer.bitcoin_rpc_endpoints
    if endpoints:
        return endpoints[0].get_secret_value()
    raise Unavailable(
        "no Bitcoin Core RPC endpoint configured (audit.bitcoin_rpc_url or the signer's "
        "bitcoin.rpc_endpoints)"
    )


def bitcoin_rpc(ctx: HostContext, method: str) -> dict[str, Any]:
    """One JSON-RPC call (result must be an object), shared across readers."""

    def call() -> dict[str, Any]:
        url = bitcoin_rpc_url(ctx)
        body = {"jsonrpc": "1.0", "id": "sbtc-ops", "method": method, "params": []}
        what = f"Bitcoin Core RPC {method}"
        # bitcoind answers JSON-RPC 1.0 errors with HTTP 404 (unknown method) or 500.
        reply = fetch(ctx, "POST", url, what=what, json_body=body, accept_status=(404, 500))
        document = require_mapping(reply.json(what), what)
        error = document.get("error")
        if error:
            error = require_mapping(error, what)
            raise RpcError(method, int(error.get("code", 0)), str(error.get("message", "")))
        if reply.status != 200:
            raise HttpStatus(f"{what} answered HTTP {reply.status}", reply.status, reply.text)
        return require_mapping(document.get("result"), f"{what} result")

    return ctx.memo(f"bitcoin-rpc:{method}", call)


def bitcoin_height(ctx: HostContext) -> int:
    blocks = bitcoin_rpc(ctx, "getblockchaininfo").get("blocks")
    if not isinstance(blocks, int) or isinstance(blocks, bool):
        raise EvidenceError("getblockchaininfo has no integer `blocks`")
    return blocks


# -- Stacks node ----------------------------------------------------------------------------


def stacks_node_url(ctx: HostContext) -> str:
    audit = ctx.settings.audit
    url = audit.stacks_node_url or next(iter(ctx.settings.stacks.endpoints), None)
    if not url:
        raise Unavailable("no Stacks node configured (audit.stacks_node_url or stacks.endpoints)")
    return url.rstrip("/")


def stacks_info(ctx: HostContext) -> dict[str, Any]:
    url = f"{stacks_node_url(ctx)}/v2/info"
    headers = {}
    api_key = api_key_for(ctx.settings, url)
    if api_key is not None:
        headers["x-api-key"] = api_key
    document = fetch_json(ctx, url, what="Stacks node /v2/info", headers=headers)
    return require_mapping(document, "Stacks node /v2/info")


# -- the signer's /info ---------------------------------------------------------------------


def signer_info_url(ctx: HostContext) -> str:
    return local_source_url(
        ctx.settings.audit.signer_info_url,
        ctx.settings.signer.event_observer_bind,
        "/info",
        "the signer's event observer address is not configured "
        "(signer event_observer.bind or audit.signer_info_url)",
    )


def signer_info(ctx: HostContext) -> dict[str, Any]:
    document = fetch_json(ctx, signer_info_url(ctx), what="signer GET /info")
    return require_mapping(document, "signer GET /info")


def signer_revision(ctx: HostContext) -> str | None:
    """`/info`'s build_info.git_revision; None when /info cannot be read or has none."""
    try:
        build = signer_info(ctx).get("build_info")
    except (Unavailable, EvidenceError):
        return None
    if isinstance(build, dict) and build.get("git_revision"):
        return str(build["git_revision"])
    return None


# -- the Stacks node's configuration and its events observers -------------------------------

DEFAULT_OBSERVER_PORT = 8801


def stacks_node_config(ctx: HostContext) -> tuple[str, dict[str, Any]]:
    """(path, document) of the Stacks node's Config.toml (audit.stacks_node_config)."""
    path = ctx.settings.audit.stacks_node_config
    if path is None:
        raise Unavailable(
            "the Stacks node's Config.toml is not configured (audit.stacks_node_config)"
        )
    return str(path), parse_toml(ctx.read_text(path), path)


def signer_observer_port(ctx: HostContext) -> int:
    """The port of the signer's event observer (signer event_observer.bind; 8801)."""
    url = loopback_url(ctx.settings.signer.event_observer_bind, "") or "http://x:8801"
    return urlsplit(url).port or DEFAULT_OBSERVER_PORT


def endpoint_port(endpoint: str) -> int | None:
    """The port of an `[[events_observer]] endpoint` (`sbtc-signer:8801`, a URL)."""
    match = re.search(r":(\d+)(/|$)", endpoint)
    return int(match.group(1)) if match else None


def observers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The `[[events_observer]]` tables of a Stacks node's Config.toml."""
    return [o for o in config.get("events_observer") or [] if isinstance(o, dict)]


def signer_observers(ctx: HostContext, config: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """(the signer's observer port, the observers whose endpoint uses that port)."""
    port = signer_observer_port(ctx)
    return port, [o for o in observers(config) if endpoint_port(str(o.get("endpoint", ""))) == port]
