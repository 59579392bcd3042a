"""Network evidence: one bounded HTTP request, failures named precisely.

Every source (the signer's /info and metrics, Bitcoin Core RPC, the Stacks node, GitHub, OSV)
goes through :func:`fetch`, which bounds connect and read time by
``audit.network_timeout_s`` and turns each way of failing into an exception a caller can use:

* :class:`Unreachable` (:class:`Unavailable`): refused, reset, DNS, timeout — the source is
  offline; audit checks whose criterion is "the service answers" catch it and fail instead.
* :class:`RateLimited` (:class:`Unavailable`): 429, or GitHub's 403 with no requests remaining.
* :class:`HttpStatus` (an :class:`EvidenceError`, reported as ``error``): any other non-2xx,
  including 401/403 (credentials rejected) and 5xx.
* :class:`Malformed` (an :class:`EvidenceError`): a 2xx whose body is not what was promised.

Messages name the host and path only: a URL's userinfo (RPC credentials) never appears.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from sbtc_ops.host.context import HostContext
from sbtc_ops.host.endpoints import public_url
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.httpdeadline import AnswerTooLarge, bounded_request

MAX_ANSWER_BYTES = 32 * 1024 * 1024
"""The largest answer read (OSV and GitHub release lists are far smaller)."""


class Unreachable(Unavailable):
    """The source did not answer (offline, refused, timed out)."""


class RateLimited(Unavailable):
    """The source refused for now (429, or no API requests remaining)."""


class HttpStatus(EvidenceError):
    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class Malformed(EvidenceError):
    """The answer is not in the promised format."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    text: str

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            raise Malformed(f"{what}: answer is not JSON ({_snippet(self.text)})") from None


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat[:80] + ("…" if len(flat) > 80 else ""))


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
    max_bytes: int | None = None,
) -> Reply:
    """One request bounded by audit.network_timeout_s and `max_bytes` (default
    MAX_ANSWER_BYTES, read at each call: tests lower it); see the module doc for failures."""
    if max_bytes is None:
        max_bytes = MAX_ANSWER_BYTES
    limit = ctx.settings.audit.network_timeout_s
    shown = public_url(url)
    parts = urlsplit(url)
    if parts.username is not None and auth is None:
        # userinfo is percent-encoded in URLs (a password with '@' or ':' must be)
        auth = (unquote(parts.username), unquote(parts.password or ""))
    if auth is not None and auth[1]:
        ctx.add_secret(auth[1])
    clean = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], *parts[2:]))
    try:
        with httpx.Client(timeout=httpx.Timeout(limit), follow_redirects=False) as client:
            response = bounded_request(
                client,
                method,
                clean,
                deadline_s=limit,
                max_bytes=max_bytes,
                json=json_body,
                headers=dict(headers or {}),
                auth=auth,
            )
            text = response.text
    except AnswerTooLarge:
        raise Malformed(f"{what} ({shown}) answered more than {max_bytes} bytes") from None
    except httpx.TimeoutException:
        raise Unreachable(f"{what} ({shown}) did not answer within {limit:g}s") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise Unreachable(f"{what} ({shown}) unreachable: {reason}") from None
    reply = Reply(response.status_code, response.headers, text)
    if response.is_success or response.status_code in accept_status:
        return reply
    raise _status_error(reply, what, shown)


def _status_error(reply: Reply, what: str, shown: str) -> Exception:
    status = reply.status
    headers = reply.headers
    if status == 429 or (status == 403 and headers.get("x-ratelimit-remaining") == "0"):
        wait = headers.get("retry-after") or headers.get("x-ratelimit-reset")
        hint = f" (retry after {wait})" if wait else ""
        return RateLimited(f"{what} ({shown}) is rate limiting requests: HTTP {status}{hint}")
    if status in (401, 403):
        return HttpStatus(
            f"{what} ({shown}) rejected the credentials: HTTP {status}", status, reply.text
        )
    return HttpStatus(
        f"{what} ({shown}) answered HTTP {status} {_snippet(reply.text)}", status, reply.text
    )


def fetch_json(ctx: HostContext, url: str, *, what: str, **kwargs: Any) -> Any:
    """GET a JSON document, shared by every check asking for the same URL in this audit."""
    return ctx.memo(
        f"http-json:{url}",
        lambda: fetch(ctx, "GET", url, what=what, **kwargs).json(what),
    )


def require_mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def local_source_url(configured: str | None, bind: str | None, path: str, missing: str) -> str:
    """The configured URL, else the service's bind address reached over loopback; else Unavailable."""
    url = configured or loopback_url(bind, path)
    if url is None:
        raise Unavailable(missing)
    return url


def loopback_url(bind: str | None, path: str) -> str | None:
    """`0.0.0.0:9184` → `http://127.0.0.1:9184{path}` (what the host itself can reach)."""
    if not bind:
        return None
    text = bind.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached via loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"
