"""Network evidence as checks use it: the host layer's bounded request (sbtc_ops.host.http),
capped at MAX_ANSWER_BYTES, and the failure for checks whose criterion is "it answers"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sbtc_ops.audit.registry import Outcome, failed
from sbtc_ops.host import http
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.http import (
    HttpStatus,
    Malformed,
    RateLimited,
    Reply,
    Unreachable,
    fetch_json,
    local_source_url,
    loopback_url,
    require_mapping,
)

__all__ = [
    "MAX_ANSWER_BYTES",
    "HttpStatus",
    "Malformed",
    "RateLimited",
    "Reply",
    "Unreachable",
    "failed_if_unreachable",
    "fetch",
    "fetch_json",
    "local_source_url",
    "loopback_url",
    "require_mapping",
]

T = TypeVar("T")

MAX_ANSWER_BYTES = http.MAX_ANSWER_BYTES
"""The largest answer a check reads (read at each call: tests lower it)."""


def fetch(
    ctx: HostContext,
    method: str,
    url: str,
    *,
    what: str,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    accept_status: tuple[int, ...] = (),
) -> Reply:
    """sbtc_ops.host.http.fetch, capped at this module's MAX_ANSWER_BYTES."""
    return http.fetch(
        ctx,
        method,
        url,
        what=what,
        json_body=json_body,
        headers=headers,
        auth=auth,
        accept_status=accept_status,
        max_bytes=MAX_ANSWER_BYTES,
    )


def failed_if_unreachable(read: Callable[[], T], remediation: str) -> T | Outcome:
    """The source's answer, or a failure for checks whose criterion is "the service answers"."""
    try:
        return read()
    except Unreachable as exc:
        return failed(str(exc), remediation)
