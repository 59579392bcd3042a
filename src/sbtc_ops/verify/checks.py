"""The checks of the restore drill; each returns a CheckResult and does one thing.

They read the restored database (a psycopg connection), the manifest and the chain readings;
none of them prints anything. Ids are stable: scripts and alerts match on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from sbtc_ops.backup.manifest import Manifest
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg.schema_identity import DRILL_SCHEMA, CanonicalSchema, escape
from sbtc_ops.results import CheckResult, Status
from sbtc_ops.stacks import SignerData
from sbtc_ops.verify.reference import Reference

SECTION = "periodically verify backup integrity"
NONCE_LENGTH = 12
SIGNER_SCHEMA = "sbtc_signer"
DKG_COLUMNS = (
    "aggregate_key",
    "dkg_shares_status",
    "created_at",
    "encrypted_private_shares",
    "signer_set_public_keys",
    "signature_share_threshold",
)
# The best-practice page's query, verbatim.
PAGE_QUERY = (
    "SELECT aggregate_key FROM sbtc_signer.dkg_shares WHERE dkg_shares_status = 'verified' "
    "ORDER BY created_at DESC"
)

# What the root process reads from the restored database is bounded server-side (sizes
# checked with octet_length/cardinality before a value is sent, rows limited): a signer has
# at most a few hundred DKG rounds, 33-byte keys, a signer set of a few dozen keys and
# encrypted shares of a few kB. More is a finding (drill.budget, memory), never memory.
MAX_DKG_ROWS = 10_000
MAX_KEY_BYTES = 64
MAX_SIGNER_SET_KEYS = 1024
MAX_SHARES_BYTES = 1 << 20
MAX_MIGRATIONS = 10_000
MAX_MIGRATION_KEY_BYTES = 512


class OversizedData(SbtcOpsError):
    """The restored database holds more, or larger values, than a signer's ever does."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what}: {size} exceeds what sbtc-ops reads ({limit})")
        self.what = what
        self.size = size
        self.limit = limit


class Verdict(StrEnum):
    """The one-word outcome of a drill (README "Verify"; docs/threat-model.md for tampered)."""

    MATCH = "match"
    STALE = "stale"
    MISMATCH = "mismatch"
    TAMPERED = "tampered"
    UNKNOWN_SCHEMA = "unknown-schema"
    CORRUPT = "corrupt"
    INCOMPLETE = "incomplete"
    OVER_BUDGET = "over-budget"  # the drill hit a budget (disk, memory, processes, time)
    ERROR = "error"


@dataclass(frozen=True)
class CheckSpec:
    """A check of the drill: its stable id, what passing it proves, and the verdict its
    failure implies (None: the comparison decides the verdict)."""

    id: str
    proves: str
    failure: Verdict | None


# Every check of the drill, in report order. A failure's verdict: the first in this order of
# severity wins (see verdict_for_failures).
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "drill.budget",
        "the drill stayed within its disk, memory, process and time budgets",
        Verdict.OVER_BUDGET,
    ),
    CheckSpec("archive.checksum", "the files match the manifest's SHA-256", Verdict.CORRUPT),
    CheckSpec("restore.complete", "the restore finished with no error", Verdict.CORRUPT),
    CheckSpec("restore.amcheck", "no corruption in restored tables and indexes", Verdict.CORRUPT),
    CheckSpec(
        "schema.reference",
        "a reference schema is known for the backup's migration level",
        Verdict.UNKNOWN_SCHEMA,
    ),
    CheckSpec(
        "schema.identity",
        "the whole schema is identical to the signer's at that migration level",
        Verdict.TAMPERED,
    ),
    CheckSpec("schema.present", "the signer's schema and dkg_shares table", Verdict.INCOMPLETE),
    CheckSpec("migrations.present", "the applied-migrations table", Verdict.INCOMPLETE),
    CheckSpec("rows.match_manifest", "row counts recorded at backup time", Verdict.INCOMPLETE),
    CheckSpec("dkg.verified_key_present", "a verified DKG row exists", Verdict.INCOMPLETE),
    CheckSpec("chain.endpoints_agree", "every Stacks endpoint returns the same key", None),
    CheckSpec("dkg.matches_chain", "the newest verified key equals the reference key", None),
    CheckSpec("dkg.signer_set_matches_chain", "signer set and threshold match the chain", None),
    CheckSpec("dkg.shares_decrypt", "the shares decrypt with the signer's key", None),
)
CHECK_IDS = tuple(spec.id for spec in CHECKS)
# A breach comes first: the drill was stopped, so what the other checks say is incomplete.
_SEVERITY = (
    Verdict.OVER_BUDGET,
    Verdict.TAMPERED,
    Verdict.CORRUPT,
    Verdict.INCOMPLETE,
    Verdict.UNKNOWN_SCHEMA,
)


def verdict_for_failures(failed: set[str]) -> Verdict | None:
    """The verdict the failed checks imply by themselves, or None (the key comparison says)."""
    implied = {spec.failure for spec in CHECKS if spec.id in failed and spec.failure}
    return next((v for v in _SEVERITY if v in implied), None)


ON_CHAIN = "on-chain"
# A key typed with --expected-key: nobody read it from the chain, so it never proves a
# rotation (no "stale") and is never remembered as an on-chain key.
GIVEN_BY_HAND = "expected (given by hand)"


def _result(
    check_id: str, status: Status, detail: str, remediation: str | None = None, **data: Any
) -> CheckResult:
    return CheckResult(
        check_id, status, detail, remediation if status != Status.PASS else None, SECTION, data=data
    )


def skipped(check_id: str, why: str) -> CheckResult:
    return _result(check_id, Status.SKIP, why)


def database_error(
    done: dict[str, CheckResult], exc: Exception, check_id: str | None = None
) -> CheckResult:
    """A query of the restored database failed: blame `check_id`, else the first database
    check not yet run."""
    order = [spec.id for spec in CHECKS if spec.failure == Verdict.INCOMPLETE]
    check_id = check_id or next((c for c in order if c not in done), "dkg.verified_key_present")
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _result(
        check_id,
        Status.FAIL,
        f"query on the restored database failed: {message}",
        "the restored schema is not the signer's; check the backup's origin",
    )


# -- the archive ----------------------------------------------------------------------------


def archive_checksum(manifest: Manifest | None, problems: list[str]) -> CheckResult:
    if manifest is None:
        return skipped(
            "archive.checksum",
            "no sbtc-ops manifest beside this dump: no checksum "
            "to compare (the restore itself still tests the archive)",
        )
    if problems:
        return _result(
            "archive.checksum",
            Status.FAIL,
            "; ".join(problems[:3]),
            "the archive changed after it was written: use another backup and "
            "investigate the storage (disk, bucket, transfer)",
        )
    return _result(
        "archive.checksum",
        Status.PASS,
        f"{len(manifest.files)} file(s), {manifest.total_size} bytes match the manifest",
    )


def restore_complete(returncode: int, errors: list[str], tool: str) -> CheckResult:
    if returncode == 0 and not errors:
        return _result("restore.complete", Status.PASS, f"{tool} finished with no error")
    first = "; ".join(errors[:3]) or f"{tool} exited with status {returncode}"
    return _result(
        "restore.complete",
        Status.FAIL,
        f"{len(errors)} error(s): {first}",
        "the archive does not restore cleanly: it is truncated, corrupt or not "
        "from a compatible pg_dump; take a new backup and verify it",
        errors=errors[:20],
        returncode=returncode,
    )


def amcheck(returncode: int, output: list[str], *, cut_at: int | None = None) -> CheckResult:
    """pg_amcheck's exit status and report; `cut_at`: it printed more than that many bytes
    and was stopped there (a clean database prints nothing)."""
    if cut_at is not None:
        return _result(
            "restore.amcheck",
            Status.FAIL,
            f"pg_amcheck reported more than {cut_at >> 10} KiB of problems and was stopped "
            f"there: {'; '.join(output[:3])}",
            "the restored data is internally inconsistent (or the archive makes pg_amcheck "
            "print without end); do not rely on this backup",
            output=output[:20],
        )
    if returncode == 0:
        return _result(
            "restore.amcheck", Status.PASS, "pg_amcheck found no corruption in tables and indexes"
        )
    return _result(
        "restore.amcheck",
        Status.FAIL,
        "; ".join(output[:3]) or f"pg_amcheck exited with status {returncode}",
        "the restored data is internally inconsistent; do not rely on this backup",
        output=output[:20],
    )


# -- the restored database ---------------------------------------------------------------------

OUR_SCHEMAS = (DRILL_SCHEMA,)  # made by the drill itself, before the restore
UNKNOWN_SCHEMA_REMEDIATION = (
    "do not restore this backup until its schema is vouched for: on the host that reaches "
    "the live signer database run `sbtc-ops schema pin` (or take a backup there with sbtc-ops, "
    "which records it), then copy that state directory's reference, or verify where it was "
    "pinned; or upgrade sbtc-ops to a version that ships this signer release's schema"
)


def schema_reference(migrations: list[str] | None, reference: Reference | None) -> CheckResult:
    """Which reference the restored schema is compared with; none: `unknown-schema`."""
    if reference is not None:
        return _result(
            "schema.reference",
            Status.PASS,
            f"reference: {reference.described}",
            origin=reference.origin,
            digest=reference.digest,
        )
    level = (
        f"{len(migrations)} migrations, newest {escape(migrations[-1])}"
        if migrations
        else "no applied migrations readable"
    )
    return _result(
        "schema.reference",
        Status.FAIL,
        f"no reference schema for this migration level ({level}): neither recorded from the "
        "live signer database nor shipped with this sbtc-ops",
        UNKNOWN_SCHEMA_REMEDIATION,
    )


def schema_identity(
    actual: CanonicalSchema | None,
    reference: Reference | None,
    restore_ok: bool,
    read_error: str | None = None,
    database_facts: Sequence[str] = (),
) -> CheckResult:
    """Every object of the restored database equals the reference's: a backup can keep a
    function's name and change its body, add a policy, a default, a cast… Any difference is
    `tampered`. When the restore itself failed, objects it did not create are its fault
    (restore.complete says so), but anything added or changed still is tampering.
    `database_facts`: database/role settings, connection limit… the restore attached, read
    and reset by the drill before this check (verify/dbfacts.py): tampering with or without
    a reference (a signer backup carries none)."""
    check_id = "schema.identity"
    if read_error is not None:
        return _result(
            check_id,
            Status.FAIL,
            f"the restored schema could not be read: {escape(read_error)}",
            _TAMPERED_REMEDIATION,
        )
    if (actual is None or reference is None) and not database_facts:
        return skipped(check_id, "no reference schema to compare with (schema.reference)")
    found = _differences(actual, reference, restore_ok, database_facts)
    if not found and not restore_ok:
        return skipped(
            check_id,
            "the restore failed (restore.complete): its missing objects are not "
            "compared; nothing was added or changed",
        )
    if not found and actual is not None and reference is not None:
        return _result(
            check_id,
            Status.PASS,
            f"{len(actual.objects)} objects identical to {reference.origin} reference "
            f"(sha256 {actual.digest[:16]}…)",
            digest=actual.digest,
        )
    against = reference.described if reference is not None else "any signer database"
    shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
    return _result(
        check_id,
        Status.FAIL,
        f"the schema differs from {against}: {shown}",
        _TAMPERED_REMEDIATION,
        differences=found[:50],
        digest=actual.digest if actual is not None else None,
        reference_digest=reference.digest if reference is not None else None,
    )


def _differences(
    actual: CanonicalSchema | None,
    reference: Reference | None,
    restore_ok: bool,
    database_facts: Sequence[str],
) -> list[str]:
    """What the restore attached to the database, then every object added or changed (and,
    when the restore succeeded, removed) against the reference."""
    found = reference.compare(actual) if actual is not None and reference is not None else []
    if not restore_ok:
        found = [line for line in found if not line.startswith("removed ")]
    return [f"added {escape(fact)}" for fact in database_facts] + found


_TAMPERED_REMEDIATION = (
    "treat this backup as tampered with: do not restore it onto a signer (sbtc-ops restore "
    "refuses it); find who could write to the backup location, and verify an older backup"
)


def schema_present(conn: psycopg.Connection[Any]) -> CheckResult:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
        (SIGNER_SCHEMA,),
    ).fetchone()
    tables = int(row[0]) if row else 0
    has_dkg = conn.execute("SELECT to_regclass('sbtc_signer.dkg_shares') IS NOT NULL").fetchone()
    if tables and has_dkg and has_dkg[0]:
        return _result("schema.present", Status.PASS, f"schema sbtc_signer with {tables} tables")
    return _result(
        "schema.present",
        Status.FAIL,
        "no sbtc_signer schema with a dkg_shares table: not a signer database",
        "check that the backup was taken from the signer's database (db_endpoint)",
    )


def migrations_present(conn: psycopg.Connection[Any], manifest: Manifest | None) -> CheckResult:
    exists = conn.execute("SELECT to_regclass('public.__sbtc_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return _result(
            "migrations.present",
            Status.FAIL,
            "public.__sbtc_migrations is missing",
            "the signer would re-run its migrations on this database; take a backup "
            "of the complete signer database",
        )
    keys = _migration_keys(conn)
    if not keys:
        return _result(
            "migrations.present",
            Status.FAIL,
            "no migration applied",
            "the backup holds an unmigrated database",
        )
    if manifest is not None and manifest.migrations and keys != manifest.migrations:
        return _result(
            "migrations.present",
            Status.FAIL,
            f"{len(keys)} migrations restored, the manifest lists {len(manifest.migrations)}",
            "the archive does not match its manifest",
            newest=keys[-1],
        )
    return _result(
        "migrations.present",
        Status.PASS,
        f"{len(keys)} migrations, newest {keys[-1]}",
        newest=keys[-1],
        count=len(keys),
    )


def _migration_keys(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        f"SELECT CASE WHEN pg_catalog.octet_length(key) <= {MAX_MIGRATION_KEY_BYTES} THEN key "
        f"END, pg_catalog.octet_length(key) FROM public.__sbtc_migrations ORDER BY key "
        f"LIMIT {MAX_MIGRATIONS + 1}"
    ).fetchall()
    if len(rows) > MAX_MIGRATIONS:
        raise OversizedData("public.__sbtc_migrations rows", len(rows), MAX_MIGRATIONS)
    for key, size in rows:
        if key is None and size is not None:
            raise OversizedData("a migration name (bytes)", int(size), MAX_MIGRATION_KEY_BYTES)
    return [str(key) for key, _size in rows if key is not None]


# By name, not to_regclass(): a manifest's key is data, never parsed as SQL names.
_TABLE_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
    "AND c.relkind IN ('r', 'p'))"
)


def rows_match_manifest(conn: psycopg.Connection[Any], manifest: Manifest | None) -> CheckResult:
    if manifest is None:
        return skipped("rows.match_manifest", "no manifest: row counts cannot be compared")
    differences = []
    for table, expected in sorted(manifest.rows.items()):
        schema, dot, name = table.partition(".")
        if not (dot and schema and name):  # the manifest is hostile input: never a crash
            differences.append(f"{table!r}: not a schema-qualified table name")
            continue
        exists = conn.execute(_TABLE_EXISTS, (schema, name)).fetchone()
        if not exists or not exists[0]:
            differences.append(f"{table}: missing (manifest: {expected} rows)")
            continue
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        ).fetchone()
        actual = int(row[0]) if row else 0
        if actual != expected:
            differences.append(f"{table}: {actual} rows, manifest says {expected}")
    if differences:
        return _result(
            "rows.match_manifest",
            Status.FAIL,
            "; ".join(differences[:3]),
            "the restored data differs from what was dumped: the archive and its "
            "manifest do not belong together, or rows were lost",
            differences=differences,
        )
    scope = (
        " (DKG-only export: other tables hold no data by design)"
        if (manifest.kind == "dkg-only")
        else ""
    )
    return _result(
        "rows.match_manifest",
        Status.PASS,
        f"{len(manifest.rows)} tables, {sum(manifest.rows.values())} rows as recorded{scope}",
    )


@dataclass(frozen=True)
class DkgRow:
    aggregate_key: bytes
    status: str
    created_at: str
    signer_set: list[bytes]
    threshold: int | None


# Every value comes with its size; a value over its bound is not sent (NULL), its size is.
DKG_ROWS_QUERY = f"""
SELECT CASE WHEN pg_catalog.octet_length(aggregate_key) <= {MAX_KEY_BYTES}
            THEN aggregate_key END,
       pg_catalog.octet_length(aggregate_key),
       pg_catalog.left(dkg_shares_status::text, 64),
       created_at,
       CASE WHEN pg_catalog.cardinality(signer_set_public_keys) <= {MAX_SIGNER_SET_KEYS}
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(signer_set_public_keys) AS k(v)
                              WHERE pg_catalog.octet_length(k.v) > {MAX_KEY_BYTES})
            THEN signer_set_public_keys END,
       pg_catalog.cardinality(signer_set_public_keys),
       signature_share_threshold
  FROM sbtc_signer.dkg_shares ORDER BY created_at DESC LIMIT {MAX_DKG_ROWS + 1}
"""


def read_dkg_rows(conn: psycopg.Connection[Any]) -> list[DkgRow]:
    """Every DKG round, newest first, bounded: OversizedData when the table holds more rows,
    or larger keys or signer sets, than a signer's ever does."""
    rows = conn.execute(DKG_ROWS_QUERY).fetchall()
    if len(rows) > MAX_DKG_ROWS:
        raise OversizedData("sbtc_signer.dkg_shares rows", len(rows), MAX_DKG_ROWS)
    found = []
    for key, key_size, status, created_at, signer_set, set_size, threshold in rows:
        if key is None and key_size is not None:
            raise OversizedData("a dkg_shares aggregate_key (bytes)", key_size, MAX_KEY_BYTES)
        if signer_set is None and set_size is not None:
            raise OversizedData(
                f"a dkg_shares signer_set_public_keys (keys, or a key over {MAX_KEY_BYTES} bytes)",
                set_size,
                MAX_SIGNER_SET_KEYS,
            )
        found.append(
            DkgRow(
                bytes(key or b""),
                str(status),
                created_at.isoformat(),
                [bytes(k) for k in (signer_set or []) if k is not None],
                int(threshold) if threshold is not None else None,
            )
        )
    return found


def newest_verified_key(conn: psycopg.Connection[Any]) -> bytes | None:
    """Exactly the page's manual query, first row (its key's size checked before it is sent)."""
    row = conn.execute(
        f"SELECT CASE WHEN pg_catalog.octet_length(page.k) <= {MAX_KEY_BYTES} THEN page.k END, "
        f"pg_catalog.octet_length(page.k) FROM ({PAGE_QUERY}) AS page(k) LIMIT 1"
    ).fetchone()
    if row is None or row[1] is None:
        return None
    if row[0] is None:
        raise OversizedData("the newest verified aggregate_key (bytes)", int(row[1]), MAX_KEY_BYTES)
    return bytes(row[0])


def verified_key_present(rows: list[DkgRow], newest: bytes | None) -> CheckResult:
    if not rows:
        return _result(
            "dkg.verified_key_present",
            Status.FAIL,
            "dkg_shares is empty",
            "a backup without DKG shares cannot restore a signer's ability to sign",
        )
    if newest is None:
        statuses = ", ".join(sorted({r.status for r in rows}))
        return _result(
            "dkg.verified_key_present",
            Status.FAIL,
            f"{len(rows)} dkg_shares row(s), none verified ({statuses})",
            "no verified DKG round is in this backup; back up again after the "
            "signer's DKG round is verified",
        )
    return _result(
        "dkg.verified_key_present",
        Status.PASS,
        f"newest verified key {newest.hex()}",
        aggregate_key=newest.hex(),
    )


# -- the chain ---------------------------------------------------------------------------------


def endpoints_agree(
    outcomes: list[tuple[str, str | None, str | None]], expected: bytes | None
) -> CheckResult:
    """outcomes: (endpoint, value hex or 'not set', error)."""
    if expected is not None and not outcomes:
        return skipped(
            "chain.endpoints_agree", f"{GIVEN_BY_HAND} with --expected-key: the chain was not read"
        )
    answered = [(url, value) for url, value, error in outcomes if error is None]
    failed = [f"{url}: {error}" for url, _value, error in outcomes if error is not None]
    if not answered:
        return _result(
            "chain.endpoints_agree",
            Status.ERROR,
            "no Stacks endpoint answered: " + "; ".join(failed),
            "check stacks.endpoints / --stacks-url, or pass --expected-key",
        )
    values = {value for _url, value in answered}
    if len(values) > 1:
        listing = "; ".join(f"{url} → {value}" for url, value in answered)
        return _result(
            "chain.endpoints_agree",
            Status.FAIL,
            f"endpoints disagree: {listing}",
            "one node is out of sync or on another network; fix it before trusting either answer",
            answers=dict(answered),
        )
    if failed:
        return _result(
            "chain.endpoints_agree",
            Status.WARN,
            f"{len(answered)} endpoint(s) agree; unreachable: " + "; ".join(failed),
            "restore the unreachable endpoint so answers can be cross-checked",
        )
    return _result(
        "chain.endpoints_agree", Status.PASS, f"{len(answered)} endpoint(s) agree on {values.pop()}"
    )


def matches_chain(
    newest: bytes | None,
    rows: list[DkgRow],
    onchain: bytes | None,
    known_onchain_history: set[bytes],
    reference: str = ON_CHAIN,
) -> tuple[CheckResult, str]:
    """Returns the check and the verdict: match, stale or mismatch. `reference` names where
    the compared key came from: ON_CHAIN, or GIVEN_BY_HAND (--expected-key, no chain read).
    Only a chain reading can make a backup stale; a key given by hand that differs is a
    mismatch, whatever the history says."""
    if newest is None:
        return skipped(
            "dkg.matches_chain", "no verified key in the backup to compare"
        ), "incomplete"
    if onchain is None:
        return _result(
            "dkg.matches_chain",
            Status.ERROR,
            f"the {reference} key is not known (not set yet, or no endpoint answered)",
            "pass --expected-key HEX or fix the Stacks endpoints",
        ), "error"
    keys = {
        "db_key": newest.hex(),
        "onchain_key" if reference == ON_CHAIN else "expected_key": onchain.hex(),
    }
    if newest == onchain:
        return _result(
            "dkg.matches_chain",
            Status.PASS,
            f"backup's newest verified key equals the {reference} key {onchain.hex()}",
            **keys,
        ), "match"
    older_keys = {r.aggregate_key for r in rows if r.aggregate_key != newest}
    if reference != ON_CHAIN:
        return _by_hand_mismatch(newest, onchain, onchain in older_keys, keys), "mismatch"
    if onchain in older_keys or newest in known_onchain_history:
        return _stale(newest, onchain, onchain in older_keys, keys), "stale"
    return _result(
        "dkg.matches_chain",
        Status.FAIL,
        f"mismatch: backup's newest verified key {newest.hex()} is found nowhere on "
        f"chain ({reference} key {onchain.hex()})",
        "this backup is not from this signer or this network; check network/deployer "
        "and the backup's origin",
        **keys,
    ), "mismatch"


def _stale(newest: bytes, onchain: bytes, earlier_round: bool, keys: dict[str, str]) -> CheckResult:
    """The on-chain key is an earlier round of the backup, or the backup's key was on chain
    before: a key rotation between the backup and now."""
    why = (
        f"the {ON_CHAIN} key {onchain.hex()} is an earlier DKG round in this backup, whose "
        f"newest verified key {newest.hex()} is not on chain (yet)"
        if earlier_round
        else f"the backup's newest verified key {newest.hex()} was on chain before; the "
        f"chain has moved on to {onchain.hex()} (a key rotation after this backup)"
    )
    return _result(
        "dkg.matches_chain",
        Status.FAIL,
        f"stale: {why}",
        "the backup predates (or postdates) a key rotation; take a new backup "
        "now so the current key shares are protected",
        **keys,
    )


def _by_hand_mismatch(
    newest: bytes, expected: bytes, older_round: bool, keys: dict[str, str]
) -> CheckResult:
    where = (
        "it is an earlier DKG round in this backup"
        if older_round
        else "the backup holds no DKG round with that key"
    )
    return _result(
        "dkg.matches_chain",
        Status.FAIL,
        f"mismatch: backup's newest verified key {newest.hex()} is not the {GIVEN_BY_HAND} "
        f"key {expected.hex()} ({where}; the chain was not read)",
        "check the key you typed (a typo looks like this), or verify without --expected-key "
        "so the key is read from the chain",
        **keys,
    )


def signer_set_matches(
    newest: bytes | None, rows: list[DkgRow], chain: SignerData | None, why_no_chain: str
) -> CheckResult:
    check_id = "dkg.signer_set_matches_chain"
    if newest is None:
        return skipped(check_id, "no verified key in the backup")
    if chain is None:
        return skipped(check_id, why_no_chain)
    row = next((r for r in rows if r.aggregate_key == newest), None)
    if row is None:
        return skipped(check_id, "the newest verified row was not found")
    if chain.aggregate_key != newest:
        return skipped(check_id, "the backup's key is not the current on-chain key")
    problems = []
    if sorted(row.signer_set) != sorted(chain.signer_set):
        problems.append(
            f"signer set has {len(row.signer_set)} keys in the backup, "
            f"{len(chain.signer_set)} on chain, and they differ"
        )
    if row.threshold is not None and row.threshold != chain.threshold:
        problems.append(f"threshold {row.threshold} in the backup, {chain.threshold} on chain")
    if problems:
        return _result(
            check_id,
            Status.FAIL,
            "; ".join(problems),
            "the DKG row does not describe the on-chain signer set",
        )
    return _result(
        check_id,
        Status.PASS,
        f"{len(chain.signer_set)} signers, threshold {chain.threshold}, as on chain",
    )


def shares_decrypt(
    conn: psycopg.Connection[Any], newest: bytes | None, secret: bytes | None
) -> CheckResult:
    """AES-256-GCM: 12-byte nonce first, the signer's 32-byte private key as the AES key."""
    check_id = "dkg.shares_decrypt"
    if secret is None:
        return skipped(check_id, "no --signer-key-file: shares not decrypted")
    if newest is None:
        return skipped(check_id, "no verified key in the backup")
    row = conn.execute(
        "SELECT CASE WHEN pg_catalog.octet_length(encrypted_private_shares) <= %s "
        "THEN encrypted_private_shares END, pg_catalog.octet_length(encrypted_private_shares) "
        "FROM sbtc_signer.dkg_shares WHERE aggregate_key = %s LIMIT 1",
        (MAX_SHARES_BYTES, newest),
    ).fetchone()
    if row is not None and row[0] is None and row[1] is not None:
        raise OversizedData(
            "the newest verified row's encrypted shares (bytes)", row[1], MAX_SHARES_BYTES
        )
    if row is None or row[0] is None:
        return _result(
            check_id,
            Status.FAIL,
            "the newest verified row has no encrypted shares",
            "the backup cannot restore the ability to sign",
        )
    blob = bytes(row[0])
    if len(blob) <= NONCE_LENGTH + 16:
        return _result(
            check_id,
            Status.FAIL,
            f"encrypted shares are only {len(blob)} bytes",
            "the shares are truncated",
        )
    try:
        plain = AESGCM(secret).decrypt(blob[:NONCE_LENGTH], blob[NONCE_LENGTH:], None)
    except InvalidTag:
        return _result(
            check_id,
            Status.FAIL,
            "the shares do not decrypt with this private key (authentication failed)",
            "wrong key file for this signer, or the shares are corrupt",
        )
    size = len(plain)
    del plain
    return _result(
        check_id,
        Status.PASS,
        f"the newest verified key's shares decrypt ({size} bytes): this backup can sign",
    )
