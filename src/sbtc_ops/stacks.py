"""Stacks node RPC client: read-only calls to the sbtc-registry contract and /v2/info.

Every configured endpoint (the operator's own node and a public API) is queried
concurrently, with bounded timeouts and retries (with backoff, honouring Retry-After) on
429 and 5xx. Each endpoint's outcome is kept separately so callers can report agreement,
disagreement and each endpoint's own error.

Calls are made as the signer makes them: `POST /v2/contracts/call-read/{deployer}/
sbtc-registry/{function}?tip=latest` with `{"sender": deployer, "arguments": []}`.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from sbtc_ops import __version__
from sbtc_ops.clarity import (
    Buffer,
    ClarityError,
    ClarityValue,
    ContractPrincipal,
    List,
    StandardPrincipal,
    Tuple,
    UInt,
    decode,
    parse_hex,
)
from sbtc_ops.config import Settings
from sbtc_ops.errors import DependencyError
from sbtc_ops.httpdeadline import AnswerTooLarge, bounded_request
from sbtc_ops.proc import InBackground
from sbtc_ops.redact import redact_url

REGISTRY_CONTRACT = "sbtc-registry"
FN_AGGREGATE_KEY = "get-current-aggregate-pubkey"
FN_SIGNER_DATA = "get-current-signer-data"

NOT_SET = b"\x00"
"""The registry's initial aggregate key: a 1-byte buffer meaning "no key set yet"."""

DEFAULT_BACKOFF_S = 0.5
EXCERPT_CHARS = 200
MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""A call-read answer holds at most a 2 MiB value as hex; anything far larger is wrong."""

T = TypeVar("T")


class StacksError(DependencyError):
    """One endpoint could not give a usable answer; the message says why (no secrets)."""


class WrongValueError(StacksError):
    """The node answered with a Clarity value of a type or shape the registry never returns."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to wait before retrying a 429 or 5xx answer. `retries` and
    `max_wait_s` are settings (stacks.retries, stacks.max_retry_wait_s): no defaults here."""

    retries: int
    max_wait_s: float
    backoff_s: float = DEFAULT_BACKOFF_S

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(retries=settings.stacks.retries, max_wait_s=settings.stacks.max_retry_wait_s)

    def wait_before_retry(self, attempt: int, response: httpx.Response) -> float:
        """Seconds to wait before retry number `attempt` (0-based): Retry-After, else backoff."""
        hinted = retry_after_seconds(response.headers.get("retry-after"))
        wait = hinted if hinted is not None else self.backoff_s * (2**attempt)
        return max(0.0, min(wait, self.max_wait_s))


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------------------
# One endpoint


def api_key_for(settings: Settings, url: str) -> str | None:
    """stacks.api_key, if `url` is one it is meant for: https, and a host (HOST or HOST:PORT)
    of stacks.api_key_hosts (default: the network preset's public API). Never the operator's
    own node, never plain HTTP, where anyone on the path would read it."""
    key = settings.stacks.api_key
    if key is None:
        return None
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not host:
        return None
    allowed = settings.effective_api_key_hosts
    if host in allowed or f"{host}:{port or 443}" in allowed:
        return key.get_secret_value()
    return None


def _client(settings: Settings, url: str) -> httpx.Client:
    headers = {
        "user-agent": f"sbtc-ops/{__version__}",
        "accept": "application/json",
        "accept-encoding": "identity",
    }
    api_key = api_key_for(settings, url)
    if api_key is not None:
        headers["x-api-key"] = api_key
    timeout = httpx.Timeout(settings.stacks.timeout_s, connect=settings.stacks.connect_timeout_s)
    return httpx.Client(headers=headers, timeout=timeout, follow_redirects=False)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"


def _describe_transport_error(exc: httpx.HTTPError, settings: Settings) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timeout: no connection within {settings.stacks.connect_timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        # One message whichever bound tripped (a silent server trips the read timeout and
        # the whole-request deadline at the same moment).
        return f"timeout: no complete answer within {settings.stacks.timeout_s:g} s"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text or type(exc).__name__}"
    return f"request failed: {text or type(exc).__name__}"


def _send(
    client: httpx.Client,
    method: str,
    url: str,
    settings: Settings,
    policy: RetryPolicy,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """One request, retried on 429/5xx; transport failures become StacksError."""
    attempt = 0
    while True:
        try:
            response = _request_once(client, method, url, settings, body)
        except httpx.HTTPError as exc:
            raise StacksError(_describe_transport_error(exc, settings)) from None
        retryable = response.status_code == 429 or response.status_code >= 500
        if not retryable or attempt >= policy.retries:
            return response
        time.sleep(policy.wait_before_retry(attempt, response))
        attempt += 1


def _request_once(
    client: httpx.Client, method: str, url: str, settings: Settings, body: dict[str, Any] | None
) -> httpx.Response:
    """The whole answer, within stacks.timeout_s from start to last byte and MAX_ANSWER_BYTES.

    httpx bounds each read, not the total: a server trickling bytes (headers included) could
    hold a call (and `verify`) for ever; see httpdeadline.
    """
    try:
        return bounded_request(
            client,
            method,
            url,
            deadline_s=settings.stacks.timeout_s,
            max_bytes=MAX_ANSWER_BYTES,
            json=body,
        )
    except AnswerTooLarge:
        raise StacksError(f"answer larger than {MAX_ANSWER_BYTES} bytes") from None


def _json_answer(response: httpx.Response) -> Any:
    """The JSON document of a 200 answer, or StacksError describing what came instead."""
    content_type = response.headers.get("content-type", "")
    text = response.text
    if response.status_code != 200:
        message = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        if response.status_code in (401, 403):
            message += " (missing or invalid API key? see stacks.api_key)"
        if response.status_code == 429:
            message += " (rate limited; retries exhausted)"
        detail = _excerpt(text)
        useless = not detail or detail == response.reason_phrase
        raise StacksError(message if useless else f"{message}: {detail}")
    if "html" in content_type or text.lstrip().startswith("<"):
        raise StacksError(f"answered HTML instead of JSON: {_excerpt(text)}")
    try:
        return json.loads(text)
    except ValueError:
        raise StacksError(f"answer is not JSON: {_excerpt(text)}") from None


def endpoint_url(base: str, path: str) -> str:
    """`path` (with its own query) under an endpoint URL that may carry a query of its own
    (`https://provider/?api_key=…`): paths joined, queries merged."""
    parts = urlsplit(base)
    path_only, _, query = path.partition("?")
    merged = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path_only, merged, ""))


def get_info(url: str, settings: Settings, *, policy: RetryPolicy | None = None) -> dict[str, Any]:
    """GET /v2/info of one node; StacksError with a clear message when that fails."""
    with _client(settings, url) as client:
        response = _send(
            client,
            "GET",
            endpoint_url(url, "/v2/info"),
            settings,
            policy or RetryPolicy.from_settings(settings),
        )
    document = _json_answer(response)
    if not isinstance(document, dict):
        raise StacksError(f"/v2/info answer is not a JSON object: {_excerpt(response.text)}")
    return document


def call_read_only(
    url: str,
    settings: Settings,
    function: str,
    arguments: Sequence[ClarityValue] = (),
    *,
    contract: str = REGISTRY_CONTRACT,
    deployer: str | None = None,
    sender: str | None = None,
    policy: RetryPolicy | None = None,
) -> ClarityValue:
    """Call a read-only function at the latest tip and decode its Clarity result.

    Raises StacksError for every failure: transport, HTTP status, HTML, okay:false,
    invalid hex, invalid Clarity value.
    """
    deployer = deployer or settings.effective_deployer
    path = f"/v2/contracts/call-read/{deployer}/{contract}/{function}?tip=latest"
    body = {"sender": sender or deployer, "arguments": [arg.to_hex() for arg in arguments]}
    with _client(settings, url) as client:
        response = _send(
            client,
            "POST",
            endpoint_url(url, path),
            settings,
            policy or RetryPolicy.from_settings(settings),
            body,
        )
    return decode_call_read_answer(_json_answer(response))


def decode_call_read_answer(document: Any) -> ClarityValue:
    """The Clarity value of a call-read JSON answer (`{"okay": true, "result": "0x…"}`)."""
    if not isinstance(document, dict) or not isinstance(document.get("okay"), bool):
        raise StacksError(f"unexpected call-read answer: {_excerpt(json.dumps(document))}")
    if not document["okay"]:
        cause = document.get("cause", "no cause given")
        raise StacksError(f"okay:false, cause: {_excerpt(str(cause))}")
    result = document.get("result")
    if not isinstance(result, str):
        raise StacksError(f"call-read answer has no result: {_excerpt(json.dumps(document))}")
    try:
        data = parse_hex(result)
    except ClarityError as exc:
        raise StacksError(f"result is not valid hex: {exc}") from None
    try:
        return decode(data)
    except ClarityError as exc:
        raise StacksError(f"result is not a valid Clarity value: {exc}") from None


# --------------------------------------------------------------------------------------
# Several endpoints


@dataclass(frozen=True)
class EndpointOutcome(Generic[T]):
    """What one endpoint answered: a value, or an error message."""

    url: str
    value: T | None = None
    error: str | None = None
    clarity: ClarityValue | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def display_url(self) -> str:
        """The URL with any password redacted, for messages."""
        return redact_url(self.url)


@dataclass(frozen=True)
class Reading(Generic[T]):
    """Per-endpoint outcomes of one registry read, with agreement helpers."""

    function: str
    outcomes: tuple[EndpointOutcome[T], ...] = field(default_factory=tuple)

    @property
    def succeeded(self) -> list[EndpointOutcome[T]]:
        return [outcome for outcome in self.outcomes if outcome.ok]

    @property
    def failed(self) -> list[EndpointOutcome[T]]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def all_failed(self) -> bool:
        return not self.succeeded

    @property
    def disagree(self) -> bool:
        """At least two endpoints answered, with different values."""
        values = [outcome.value for outcome in self.succeeded]
        return any(value != values[0] for value in values[1:])

    @property
    def agreed(self) -> T | None:
        """The value every answering endpoint gave; None when none answered or they differ."""
        if self.all_failed or self.disagree:
            return None
        return self.succeeded[0].value


@dataclass(frozen=True)
class AggregateKeyReading(Reading[bytes]):
    """Outcome values are the raw buffer: a 33-byte key, or NOT_SET (b"\\x00")."""

    @property
    def agreed_key(self) -> bytes | None:
        agreed = self.agreed
        return agreed if agreed is not None and agreed != NOT_SET else None

    @property
    def not_set(self) -> bool:
        """Every answering endpoint reports the registry's initial 0x00 (no key yet)."""
        return self.agreed == NOT_SET


@dataclass(frozen=True)
class SignerData:
    """get-current-signer-data; aggregate_key is None while the registry holds 0x00."""

    aggregate_key: bytes | None
    signer_set: list[bytes]
    threshold: int
    principal: str

    def to_json(self) -> dict[str, Any]:
        return {
            "aggregate_key": self.aggregate_key.hex() if self.aggregate_key else None,
            "signer_set": [key.hex() for key in self.signer_set],
            "threshold": self.threshold,
            "principal": self.principal,
        }


@dataclass(frozen=True)
class SignerDataReading(Reading[SignerData]):
    @property
    def agreed_key(self) -> bytes | None:
        agreed = self.agreed
        return agreed.aggregate_key if agreed is not None else None

    @property
    def not_set(self) -> bool:
        agreed = self.agreed
        return agreed is not None and agreed.aggregate_key is None


def query_endpoints(
    urls: Sequence[str], job: Callable[[str], tuple[T, ClarityValue | None]]
) -> tuple[EndpointOutcome[T], ...]:
    """Run `job(url)` for every URL concurrently; StacksError becomes that endpoint's error."""

    def one(url: str) -> EndpointOutcome[T]:
        started = time.monotonic()
        try:
            value, clarity = job(url)
        except StacksError as exc:
            return EndpointOutcome(url, error=str(exc), elapsed_s=time.monotonic() - started)
        return EndpointOutcome(url, value, clarity=clarity, elapsed_s=time.monotonic() - started)

    # Daemon threads, not a pool: Ctrl-C/SIGTERM must not wait for a slow endpoint (each
    # request is bounded by its deadline anyway).
    running = [InBackground(functools.partial(one, url), name="stacks") for url in urls]
    return tuple(work.result() for work in running)


def _urls(settings: Settings, urls: Sequence[str] | None) -> list[str]:
    chosen = list(urls) if urls else settings.effective_stacks_endpoints
    if not chosen:
        raise StacksError("no Stacks endpoint configured (stacks.endpoints or --stacks-url)")
    return chosen


def read_aggregate_key(
    settings: Settings, urls: list[str] | None = None, *, policy: RetryPolicy | None = None
) -> AggregateKeyReading:
    """get-current-aggregate-pubkey from every endpoint (default: the configured ones)."""

    def job(url: str) -> tuple[bytes, ClarityValue]:
        value = call_read_only(url, settings, FN_AGGREGATE_KEY, policy=policy)
        return aggregate_key_from_value(value, FN_AGGREGATE_KEY), value

    outcomes = query_endpoints(_urls(settings, urls), job)
    return AggregateKeyReading(FN_AGGREGATE_KEY, outcomes)


def read_signer_data(
    settings: Settings, urls: list[str] | None = None, *, policy: RetryPolicy | None = None
) -> SignerDataReading:
    """get-current-signer-data from every endpoint (default: the configured ones)."""

    def job(url: str) -> tuple[SignerData, ClarityValue]:
        value = call_read_only(url, settings, FN_SIGNER_DATA, policy=policy)
        return signer_data_from_value(value), value

    outcomes = query_endpoints(_urls(settings, urls), job)
    return SignerDataReading(FN_SIGNER_DATA, outcomes)


# --------------------------------------------------------------------------------------
# Registry values


def _describe(value: ClarityValue) -> str:
    text = value.to_text()
    shown = text if len(text) <= 80 else text[:80] + "…"
    return f"{value.clarity_type} {shown}"


def aggregate_key_from_value(value: ClarityValue, what: str) -> bytes:
    """The raw key buffer: 33 bytes (compressed point) or NOT_SET; WrongValueError otherwise."""
    if not isinstance(value, Buffer):
        raise WrongValueError(f"{what} returned {_describe(value)}, expected (buff 33)")
    if value.data == NOT_SET:
        return NOT_SET
    if len(value.data) != 33 or value.data[0] not in (2, 3):
        raise WrongValueError(
            f"{what} returned {_describe(value)}, not a 33-byte compressed public key "
            "nor the initial 0x00"
        )
    return value.data


def signer_data_from_value(value: ClarityValue) -> SignerData:
    """Parse get-current-signer-data's tuple; WrongValueError when its shape is wrong."""
    what = FN_SIGNER_DATA
    if not isinstance(value, Tuple):
        raise WrongValueError(f"{what} returned {_describe(value)}, expected a tuple")
    fields = value.as_dict()
    missing = [
        name
        for name in (
            "current-aggregate-pubkey",
            "current-signature-threshold",
            "current-signer-principal",
            "current-signer-set",
        )
        if name not in fields
    ]
    if missing:
        raise WrongValueError(f"{what} returned a tuple without {', '.join(missing)}")
    key = aggregate_key_from_value(fields["current-aggregate-pubkey"], f"{what} aggregate key")
    threshold = fields["current-signature-threshold"]
    if not isinstance(threshold, UInt):
        raise WrongValueError(f"{what} threshold is {_describe(threshold)}, expected uint")
    principal = fields["current-signer-principal"]
    if isinstance(principal, StandardPrincipal):
        principal_text = principal.address
    elif isinstance(principal, ContractPrincipal):
        principal_text = f"{principal.address}.{principal.name}"
    else:
        raise WrongValueError(f"{what} principal is {_describe(principal)}, expected principal")
    signer_set = fields["current-signer-set"]
    if not isinstance(signer_set, List) or not all(
        isinstance(item, Buffer) and len(item.data) == 33 for item in signer_set.items
    ):
        raise WrongValueError(
            f"{what} signer set is {_describe(signer_set)}, expected (list 128 (buff 33))"
        )
    return SignerData(
        aggregate_key=None if key == NOT_SET else key,
        signer_set=[item.data for item in signer_set.items if isinstance(item, Buffer)],
        threshold=threshold.value,
        principal=principal_text,
    )


def decode_hex_or_answer(text: str) -> ClarityValue:
    """A Clarity value from hex (with or without 0x) or from a whole call-read JSON answer.

    ClarityError for invalid hex or Clarity data; StacksError for an answer that carries
    no value (okay:false and its cause, or an unexpected document).
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError as exc:
            raise ClarityError(
                f"input looks like a JSON answer but is not valid JSON: {exc}"
            ) from None
        return decode_call_read_answer(document)
    if not stripped:
        raise ClarityError("no input: give the hex of a Clarity value or a call-read answer")
    return decode(parse_hex("".join(stripped.split())))
