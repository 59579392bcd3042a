"""Secrets out of everything sbtc-ops shows, writes or sends.

Two layers, both used by every output channel (stdout, stderr, logs, the state database,
the status page, webhooks, /metrics):

- *Structural* redaction knows where credentials sit: the password and `sslpassword` of a
  libpq URL or keyword DSN (parsed as libpq parses it, via `conninfo_to_dict`, so `#`, `?`,
  `@` and `%` in passwords and multi-host URLs are handled), the userinfo and secret-named
  query parameters of other URLs, and `NAME_PASSWORD=value` style assignments. Only the
  secret part is hidden: host, port, database name and user stay readable.
- A process-wide *registry* of secret values (registered when settings load: the signer's
  private key, database passwords, API keys, webhook URLs, secret-named environment
  variables) lets `scrub()` remove a secret wherever it appears, in the forms it takes when
  quoted in a URL, in JSON, in HTML or in a libpq DSN.

This module sits at the bottom of the layering: it imports nothing else from sbtc_ops.
"""

from __future__ import annotations

import html
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote

REDACTED = "**********"

# Published defaults (the sBTC devenv's postgres:postgres, devnet:devnet, ...) are public
# knowledge; scrubbing them would also blank out every service and scheme named the same.
PUBLIC_DEFAULT_PASSWORDS = frozenset(
    {
        "postgres",
        "devnet",
        "password",
        "passw0rd",
        "changeme",
        "secret",
        "admin",
        "root",
        "bitcoin",
        "bitcoinrpc",
        "rpcpassword",
        "signer",
        "stacks",
        "testapikey",
        "test",
        "example",
        "123456",
        "12345678",
        "123456789",
        "qwerty",
        "letmein",
        "default",
    }
)
MIN_SECRET_CHARS = 4  # a quoted form this short is never searched for
# A secret is scrubbed everywhere only from this length: shorter values (and the words below)
# also occur in ordinary output, and replacing them would rewrite it (a password "fail" once
# turned every failed check's status into the marker). Such a secret is *weak*: not scrubbed,
# counted (weak_secret_count), warned about once per run, and reported by `audit secrets`.
MIN_SCRUBBED_CHARS = 8
# Words sbtc-ops prints as statuses, verdicts, outcomes, states, severities and JSON literals:
# a secret equal to one of them cannot be told apart from them.
COMMON_WORDS = frozenset(
    {
        "pass", "warn", "fail", "skip", "error", "ok", "true", "false", "null", "none",
        "match", "stale", "mismatch", "tampered", "corrupt", "incomplete", "unknown-schema",
        "over-budget", "problem", "interrupted", "complete", "invalid", "partial", "unknown",
        "critical", "high", "medium", "low", "info", "running", "finished", "verified",
        "unverified", "failed", "mainnet", "testnet", "devnet", "signer", "sbtc_signer",
    }
)  # fmt: skip
# JSON fields whose value is an id or an enum, never free text: scrub_data leaves them (and
# every key) alone, so no secret can rewrite what scripts match on.
STRUCTURAL_FIELDS = frozenset(
    {"id", "status", "verdict", "outcome", "state", "severity", "kind", "key_source", "format"}
)

# libpq connection parameters that hold a secret (everything else is shown).
DSN_SECRET_KEYS = frozenset({"password", "sslpassword"})
# Query parameters of http(s) and other URLs that carry a credential.
SECRET_QUERY_NAMES = frozenset(
    {
        "password",
        "sslpassword",
        "passwd",
        "pass",
        "pwd",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "token",
        "access_token",
        "auth_token",
        "auth",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
_SECRET_NAME_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "private_key",
    "privatekey",
    "api_key",
    "apikey",
)
_DB_SCHEMES = ("postgresql://", "postgres://")


def looks_secret_name(name: str) -> bool:
    """A setting, variable or parameter name that holds a secret (PGPASSWORD, api_key, …)."""
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in _SECRET_NAME_WORDS)


def scrubbable(value: str) -> bool:
    """Safe to scrub everywhere: long enough, not a common word, not a published default."""
    never_the_marker = value.strip("*") != ""
    long_enough = len(value) >= MIN_SCRUBBED_CHARS
    lowered = value.lower()
    return (
        long_enough
        and never_the_marker
        and lowered not in PUBLIC_DEFAULT_PASSWORDS
        and lowered not in COMMON_WORDS
    )


def is_weak(value: str) -> bool:
    """A secret too short or too common to scrub safely (a published default is not counted
    here: it is public knowledge, and `audit secrets` reports it as a default credential)."""
    return (
        bool(value.strip("*"))
        and not scrubbable(value)
        and value.lower() not in PUBLIC_DEFAULT_PASSWORDS
    )


# -- libpq URLs and keyword DSNs -----------------------------------------------------------


def is_db_url(text: str) -> bool:
    return text.strip().lower().startswith(_DB_SCHEMES)


def parse_dsn(dsn: str) -> dict[str, str] | None:
    """libpq's own reading of a URL or keyword DSN; None when libpq rejects it."""
    # psycopg loads only here: every command imports redact, few parse a DSN.
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except (ProgrammingError, ValueError, TypeError):
        return None
    return {key: str(value) for key, value in params.items() if value is not None}


def dsn_secrets(dsn: str) -> list[str]:
    """The secret values (password, sslpassword) of a libpq URL or keyword DSN."""
    params = parse_dsn(dsn)
    if params is None:
        return []
    return [params[key] for key in sorted(DSN_SECRET_KEYS) if params.get(key)]


def redact_dsn(dsn: str) -> str:
    """A libpq URL or keyword DSN with only its password and sslpassword hidden.

    The original text is kept and only the secret spans are replaced; the result is checked
    against libpq's own parse, and one that still holds a secret is hidden whole.
    """
    masked = _mask_db_url(dsn) if is_db_url(dsn) else _mask_keyword_dsn(dsn)
    original = parse_dsn(dsn)
    if original is None or _hides_secrets(original, masked):
        return masked
    scheme, sep, _ = dsn.partition("://")
    return f"{scheme}://{REDACTED}" if sep else REDACTED


def _hides_secrets(original: Mapping[str, str], masked: str) -> bool:
    shown = parse_dsn(masked)
    if shown is None:
        return False
    secrets = [original[k] for k in DSN_SECRET_KEYS if original.get(k) not in (None, "", REDACTED)]
    if any(shown.get(k) not in (None, REDACTED) for k in DSN_SECRET_KEYS):
        return False
    if any(v in secrets for k, v in shown.items() if k not in DSN_SECRET_KEYS):
        return False
    return not any(s in masked for s in secrets if len(s) >= MIN_SECRET_CHARS)


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of `scheme://rest` ends (its '@'), or -1 when there is none.

    libpq stops at the first '@' or '/'; a raw '@' inside a password would leave part of it
    looking like a host, so the userinfo extends to the last '@' before the path.
    """
    first = next((i for i, ch in enumerate(rest) if ch in "@/"), -1)
    if first == -1 or rest[first] == "/":
        return -1
    slash = rest.find("/", first)
    last = rest.rfind("@", first, slash if slash != -1 else len(rest))
    return max(first, last)


def _is_http(scheme: str) -> bool:
    return scheme.lower() in ("http", "https")


def _mask_userinfo(url: str, *, keep_lone_user: bool) -> str:
    scheme, sep, rest = url.partition("://")
    end = _userinfo_end(rest)
    if not sep or end == -1:
        return url
    userinfo = rest[:end]
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{REDACTED}"
    elif not keep_lone_user and _is_http(scheme) and userinfo:
        userinfo = REDACTED  # a lone "user" of an http URL is usually a token
    return f"{scheme}://{userinfo}{rest[end:]}"


_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&#\s]*)")
# libpq reads a query value up to the next '&': '#' is part of it.
_DB_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s]+)=(?P<value>[^&\s]*)")


def _mask_query(url: str, names: frozenset[str], pattern: re.Pattern[str] = _QUERY_PARAM) -> str:
    def replace(match: re.Match[str]) -> str:
        name = unquote(match["name"]).lower()
        if name not in names or not match["value"]:
            return match.group(0)
        return f"{match['lead']}{match['name']}={REDACTED}"

    head, sep, query = url.partition("?")
    if not sep:
        return url
    return head + pattern.sub(replace, "?" + query)


def _mask_db_url(url: str) -> str:
    masked = _mask_userinfo(url, keep_lone_user=True)
    return _mask_query(masked, DSN_SECRET_KEYS, _DB_QUERY_PARAM)


_DSN_PAIR = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'?|(?:[^\s'\\]|\\.)+|)",
    re.DOTALL,
)


def _mask_keyword_dsn(dsn: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["key"].lower() not in DSN_SECRET_KEYS:
            return match.group(0)
        return f"{match['key']}{match['eq']}{REDACTED}"

    return _DSN_PAIR.sub(replace, dsn)


# -- other URLs --------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A URL for display: database URLs as libpq reads them, other URLs without userinfo
    password (or token-like lone user) and without secret query parameter values."""
    if is_db_url(url):
        return redact_dsn(url)
    if "://" not in url:
        return url
    return _mask_query(_mask_userinfo(url, keep_lone_user=False), SECRET_QUERY_NAMES)


def redact_secret_url(url: str) -> str:
    """A value that is a credential as a whole. A webhook URL (its path is a token) shows only
    where it points; a database URL or DSN, and a URL with a password, show their non-secret
    parts; anything else is hidden whole."""
    if is_db_url(url) or ("://" not in url and parse_dsn(url) is not None and "=" in url):
        return redact_dsn(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return REDACTED
    end = _userinfo_end(rest)
    if end != -1 and ":" in rest[:end]:
        return redact_url(url)
    after = rest[end + 1 :] if end != -1 else rest
    host = re.split(r"[/?#]", after, maxsplit=1)[0]
    if not after[len(host) :].strip("/"):
        return redact_url(url)
    return f"{scheme}://{host}/{REDACTED}"


def url_secrets(url: str) -> list[str]:
    """The secret values a URL carries: password (or token-like lone user), secret query
    parameter values; for database URLs, libpq's password and sslpassword."""
    if is_db_url(url):
        return dsn_secrets(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    found = []
    end = _userinfo_end(rest)
    if end != -1:
        user, colon, password = rest[:end].partition(":")
        if colon:
            found.append(unquote(password))
        elif _is_http(scheme):
            found.append(unquote(user))
    _, _, query = rest.partition("?")
    for match in _QUERY_PARAM.finditer("?" + query.split("#", 1)[0]):
        if unquote(match["name"]).lower() in SECRET_QUERY_NAMES and match["value"]:
            found.append(unquote(match["value"]))
    return [value for value in found if value]


def url_credentials(url: str) -> tuple[str, str | None] | None:
    """(user, password) of a URL as its client reads it (libpq for database URLs)."""
    if is_db_url(url):
        params = parse_dsn(url)
        return None if params is None else (params.get("user", ""), params.get("password"))
    _, sep, rest = url.partition("://")
    end = _userinfo_end(rest) if sep else -1
    if end == -1:
        return ("", None) if sep else None
    user, colon, password = rest[:end].partition(":")
    return unquote(user), unquote(password) if colon else None


# -- free text ---------------------------------------------------------------------------

# A URL in prose ends before the punctuation that follows it ("cannot reach URL: refused"),
# and before a backslash: in JSON text that starts an escape, which must stay whole.
_URL_IN_TEXT = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`\\]+?(?=[.,:;)\]}]*(?:[\s\"'<>`\\]|$))"
)
_ASSIGNMENT = re.compile(
    r"(?<![?&;\w\-])(?P<name>[\w.\-]*(?:password|passwd|passphrase|secret|token|private_key"
    r"|api_key|apikey))(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&\"'<>`\\]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Structural redaction of free text: credentials in URLs, DSN keywords, assignments."""
    value = text.strip()
    if "://" in value and not any(ch.isspace() for ch in value):
        # The text is one URL: all of it, even characters that end a URL in prose.
        text = text.replace(value, redact_url(value))
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match[str]) -> str:
    if match["value"] == REDACTED:
        return match.group(0)
    return f"{match['name']}{match['eq']}{REDACTED}"


# -- the registry ------------------------------------------------------------------------


class _Registry:
    """Secret values of this process. Registering rebuilds one pattern; scrubbing reads the
    current pattern (replaced, never mutated), so readers need no lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._weak: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.weak_warned = False

    def add(self, values: Iterable[str | None]) -> None:
        present = [v for v in values if v]
        weak = {v for v in present if is_weak(v)} - self._weak
        if weak:
            with self._lock:
                self._weak |= weak
        fresh = {v for v in present if scrubbable(v)} - self._values
        if not fresh:
            return
        with self._lock:
            self._values |= fresh
            forms = {form for value in self._values for form in _forms(value)}
            ordered = sorted(forms, key=len, reverse=True)  # longest first: no partial hits
            self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)

    def clear(self) -> None:
        with self._lock:
            self._values = set()
            self._weak = set()
            self._pattern = None
            self.weak_warned = False

    @property
    def weak_count(self) -> int:
        return len(self._weak)

    def sub(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


def _forms(value: str) -> set[str]:
    """The ways a secret is written when it is quoted: in a URL, JSON, HTML, a libpq DSN."""
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        html.escape(value),
        html.escape(value, quote=False),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        value.replace("\\", "\\\\").replace("'", "\\'"),
    }
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


_REGISTRY = _Registry()


def register(*values: str | None) -> None:
    """Add secret values to scrub from every output of this process."""
    _REGISTRY.add(values)


def register_url(url: str | None) -> None:
    """Register the secrets a URL or DSN carries."""
    if url:
        register(*(url_secrets(url) if "://" in url else dsn_secrets(url)))


def register_environment(environ: Mapping[str, str]) -> None:
    """Secret-named variables (PGPASSWORD, AWS_SECRET_ACCESS_KEY, SIGNER_SIGNER__PRIVATE_KEY)
    and passwords inside URL-valued variables."""
    for name, value in environ.items():
        if looks_secret_name(name) and not _names_no_secret(name, value):
            register(value, value.strip().lower().removeprefix("0x"))
        elif "://" in value:
            register_url(value)


def _names_no_secret(name: str, value: str) -> bool:
    """PASSWORD_FILE=/run/secrets/x, TOKEN_TTL=3600: settings about a secret, not one."""
    about = name.upper().endswith(("_FILE", "_PATH", "_DIR", "_TTL"))
    return about or value.strip().lower() in ("true", "false")


def weak_secret_count() -> int:
    """How many registered secrets were too short or too common to scrub (never which)."""
    return _REGISTRY.weak_count


def weak_secrets_warning() -> str | None:
    """Once per process, a warning when weak secrets were registered (None otherwise)."""
    count = _REGISTRY.weak_count
    if not count or _REGISTRY.weak_warned:
        return None
    _REGISTRY.weak_warned = True
    return (
        f"warning: {count} configured secret(s) are shorter than {MIN_SCRUBBED_CHARS} "
        "characters or a common word, too weak to be hidden in output without rewriting it; "
        "replace them with long random values (`sbtc-ops audit --only secrets` says where)"
    )


def forget_all() -> None:
    """Empty the registry (tests)."""
    _REGISTRY.clear()


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every registered secret (and `extra`) replaced and every structural
    credential redacted. Idempotent."""
    extra_values = [v for v in extra if v and scrubbable(v)]
    if extra_values:
        for value in sorted({f for v in extra_values for f in _forms(v)}, key=len, reverse=True):
            text = re.sub(re.escape(value), REDACTED, text, flags=re.IGNORECASE)
    return redact_text(_REGISTRY.sub(text))


def scrub_data(value: Any, extra: Iterable[str] = ()) -> Any:
    """A JSON-like value with every free-text string scrubbed. Keys, and the values of
    STRUCTURAL_FIELDS (ids and enums: status, verdict…), are never rewritten."""
    extra = list(extra)
    if isinstance(value, str):
        return scrub(value, extra)
    if isinstance(value, Mapping):
        return {
            str(k): v if k in STRUCTURAL_FIELDS and isinstance(v, str) else scrub_data(v, extra)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_data(item, extra) for item in value]
    return value


class ScrubbingFormatter(logging.Formatter):
    """Log records (tracebacks included) with every secret removed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs secrets from everything written, then passes it on.

    Installed as sys.stdout and sys.stderr by the CLI (and a serve job's process), so Rich,
    click, print() and logging
    all go through it. Writers emit whole messages (one write per Rich print, log record or
    JSON document), so a secret is never split across two writes."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.stream.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stream.errors


def install_output_scrubbing() -> None:
    """Route stdout and stderr of this process through ScrubbingStream (once)."""
    if not isinstance(sys.stdout, ScrubbingStream):
        sys.stdout = ScrubbingStream(sys.stdout)
    if not isinstance(sys.stderr, ScrubbingStream):
        sys.stderr = ScrubbingStream(sys.stderr)
