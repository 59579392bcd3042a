"""The in-toto Statement (v1) of one restore drill: pure data, no I/O.

Subjects are the backup's archive files with their SHA-256; the predicate (type
PREDICATE_TYPE, documented in docs/attestations.md) says what the drill proved. The bytes that
are signed are the statement's canonical JSON (sorted keys, no whitespace, UTF-8), so any
consumer can re-serialise and compare, and a flipped byte breaks every signature.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:sbtc-ops:restore-drill:v1"
MAX_STATEMENT_BYTES = 1 << 20  # a statement is a few kB; anything larger is refused unread
HEX64 = frozenset("0123456789abcdef")


class StatementError(ValueError):
    """Bytes that are not a drill statement of this version."""


@dataclass(frozen=True)
class Subject:
    name: str  # path of the file inside the backup, e.g. "signer.dump"
    sha256: str


@dataclass
class DrillEvidence:
    """What a drill proved, as plain values (built by verify/, signed here)."""

    backup_id: str
    location: str | None
    manifest_sha256: str | None
    subjects: list[Subject]
    verdict: str
    checks: list[dict[str, Any]]
    database: dict[str, Any]
    chain: dict[str, Any]
    schema_identity: dict[str, Any] | None
    timings: dict[str, float]
    budgets: dict[str, Any] | None
    tool: dict[str, str]
    host: str
    started_at: str
    finished_at: str
    extra: dict[str, Any] = field(default_factory=dict)


def build(evidence: DrillEvidence) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": s.name, "digest": {"sha256": s.sha256}}
            for s in sorted(evidence.subjects, key=lambda s: s.name)
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "backup": {
                "id": evidence.backup_id,
                "location": evidence.location,
                "manifest_sha256": evidence.manifest_sha256,
            },
            "verdict": evidence.verdict,
            "checks": evidence.checks,
            "schema_identity": evidence.schema_identity,
            "database": evidence.database,
            "chain": evidence.chain,
            "timings": evidence.timings,
            "budgets": evidence.budgets,
            "tool": evidence.tool,
            "host": evidence.host,
            "started_at": evidence.started_at,
            "finished_at": evidence.finished_at,
            **evidence.extra,
        },
    }


def canonical_bytes(statement: dict[str, Any]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(data: bytes) -> dict[str, Any]:
    """A statement read back (hostile bytes: bounded, shape-checked, never trusted for more
    than what its signatures vouch for)."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(f"larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        statement = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StatementError(f"not JSON: {exc}") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError("not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise StatementError(f"predicate type is not {PREDICATE_TYPE}")
    subjects(statement)
    if not isinstance(statement.get("predicate"), dict):
        raise StatementError("no predicate")
    return statement


def subjects(statement: dict[str, Any]) -> list[Subject]:
    raw = statement.get("subject")
    if not isinstance(raw, list) or not raw:
        raise StatementError("no subject")
    found = []
    for entry in raw:
        name = entry.get("name") if isinstance(entry, dict) else None
        sha = (entry.get("digest") or {}).get("sha256") if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or not isinstance(sha, str)
            or len(sha) != 64
            or set(sha) - HEX64
        ):
            raise StatementError("a subject has no name or no SHA-256")
        found.append(Subject(name, sha))
    return found


def summary(statement: dict[str, Any]) -> dict[str, Any]:
    """The fields a reviewer reads first (from a parsed statement)."""
    predicate = statement["predicate"]
    backup = predicate.get("backup") if isinstance(predicate.get("backup"), dict) else {}
    chain = predicate.get("chain") if isinstance(predicate.get("chain"), dict) else {}
    return {
        "backup": backup.get("id"),
        "verdict": predicate.get("verdict"),
        "onchain_key": chain.get("key"),
        "key_source": chain.get("key_source"),
        "tip": chain.get("tip"),
        "host": predicate.get("host"),
        "finished_at": predicate.get("finished_at"),
    }
