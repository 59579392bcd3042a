"""Where a restored backup's schema reference comes from, in order (docs/threat-model.md):

1. the live signer database's canonical schema, recorded in the state at every backup (from
   the dump's own snapshot) or pinned with `sbtc-ops schema pin`, for the exact migration
   level of the restored database;
2. the table shipped with sbtc-ops (signer/schema_digests.toml), per signer release;
3. none: the drill cannot vouch for the schema (verdict `unknown-schema`).

Nothing of the backup or its manifest chooses a reference but the restored database's own
applied-migrations list, and a forged list only selects another real reference, which the
schema must then equal exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from sbtc_ops.backup.source import ConnectionTarget
from sbtc_ops.errors import DependencyError
from sbtc_ops.pg.schema_identity import CanonicalSchema, differences, escape, read_canonical_schema
from sbtc_ops.signer import schema_refs
from sbtc_ops.state import StateStore

MAX_MIGRATIONS = 10_000
MAX_MIGRATION_KEY = 512
# The restored database's applied migrations, bounded (the table is the archive's).
MIGRATIONS_QUERY = (
    "SELECT pg_catalog.left(key, %(maxkey)s) FROM public.__sbtc_migrations ORDER BY 1 LIMIT %(cap)s"
)


@dataclass(frozen=True)
class Reference:
    origin: str  # "live" (recorded from the signer DB) or "shipped" (a signer release)
    digest: str
    described: str
    schema: CanonicalSchema | None = None  # live: every definition
    shipped: schema_refs.SchemaLevel | None = None  # shipped: names and short digests

    def compare(self, actual: CanonicalSchema, limit: int = 50) -> list[str]:
        """What differs from the reference (empty: identical)."""
        if actual.digest == self.digest:
            return []
        if self.schema is not None:
            return differences(self.schema, actual, limit) or ["changed: the digest differs"]
        if self.shipped is None:
            return ["changed: the digest differs"]
        lines = [escape(line) for line in self.shipped.differences(actual.objects)]
        if not lines:
            lines = [
                "changed: a definition differs from the release's (the shipped table names "
                "no object: pin the live database's schema to name it)"
            ]
        return lines[:limit] + ([f"and {len(lines) - limit} more"] if len(lines) > limit else [])


def find_reference(
    state_dir: Path, migrations: list[str], table: schema_refs.SchemaTable | None = None
) -> Reference | None:
    """The reference for exactly this migration level (`table`: the shipped table, by
    default the one in the package)."""
    if not migrations:
        return None
    with StateStore.open(state_dir) as store:
        stored = store.schema_reference(migrations)
    if stored is not None:
        when = datetime.fromtimestamp(stored.recorded_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return Reference(
            "live",
            stored.digest,
            f"the live signer database's schema at this migration level ({stored.source}, {when})",
            schema=CanonicalSchema.from_json(stored.objects_json),
        )
    shipped = (table if table is not None else schema_refs.load()).for_migrations(migrations)
    if shipped is not None:
        return Reference(
            "shipped",
            shipped.digest,
            f"the signer's schema at {shipped.describe()}, shipped with sbtc-ops",
            shipped=shipped,
        )
    return None


def restored_migrations(conn: psycopg.Connection[Any]) -> list[str] | None:
    """The applied migrations of a restored database, or None when it has none readable (or
    more than any signer has)."""
    try:
        with conn.transaction(force_rollback=True):
            rows = conn.execute(
                MIGRATIONS_QUERY, {"maxkey": MAX_MIGRATION_KEY, "cap": MAX_MIGRATIONS + 1}
            ).fetchall()
    except psycopg.Error:
        return None
    if not rows or len(rows) > MAX_MIGRATIONS:
        return None
    return [str(row[0]) for row in rows]


@dataclass(frozen=True)
class PinnedReference:
    migrations: list[str]
    digest: str
    objects: int
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "migrations": len(self.migrations),
            "newest_migration": self.migrations[-1] if self.migrations else None,
            "digest": self.digest,
            "objects": self.objects,
            "changed": self.changed,
        }


def read_live_schema(target: ConnectionTarget) -> tuple[list[str], CanonicalSchema]:
    """The live database's applied migrations and canonical schema, in one snapshot."""
    with target.connect(autocommit=True) as conn:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                migrations = restored_migrations(conn)
                schema = read_canonical_schema(conn)
        except psycopg.Error as exc:
            raise DependencyError(
                f"reading the schema of {target.shown} failed: {target.scrub(str(exc))}"
            ) from None
    if not migrations:
        raise DependencyError(
            f"{target.shown} has no applied migrations (public.__sbtc_migrations): it is not "
            "a signer database (check db_endpoint / --db)"
        )
    return migrations, schema


def pin_live_reference(state_dir: Path, target: ConnectionTarget) -> PinnedReference:
    """`sbtc-ops schema pin`: record the live database's schema as its level's reference."""
    migrations, schema = read_live_schema(target)
    with StateStore.open(state_dir) as store:
        changed = store.record_schema_reference(
            migrations, schema.digest, schema.to_json(), f"pinned from {target.shown}"
        )
    return PinnedReference(sorted(migrations), schema.digest, len(schema.objects), changed)
