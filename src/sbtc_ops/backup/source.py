"""The live signer database, read inside one exported snapshot.

Everything the manifest records (row counts, migrations, the newest verified key) is read in
the same REPEATABLE READ transaction whose snapshot pg_dump imports, so it describes
exactly what was dumped even while the signer keeps writing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from sbtc_ops import redact
from sbtc_ops.errors import ConfigError, DependencyError, SbtcOpsError
from sbtc_ops.pg import libpq
from sbtc_ops.pg.libpq import ClientTarget
from sbtc_ops.pg.schema_identity import CanonicalSchema, read_canonical_schema

log = logging.getLogger(__name__)

SIGNER_SCHEMA = "sbtc_signer"
MIGRATIONS_TABLE = "public.__sbtc_migrations"


@dataclass(frozen=True)
class ConnectionTarget:
    """A libpq target split into what may be shown and the secrets, which may not.

    The connection follows libpq's conventions: what the URL leaves out (the password, say)
    comes from PGPASSWORD, a pgpass file or a pg_service.conf entry, as for psql.
    """

    params: dict[str, Any]
    password: str | None
    shown: str
    sslpassword: str | None = None

    @property
    def conninfo_without_password(self) -> str:
        return make_conninfo(**self.params)

    @property
    def client(self) -> ClientTarget:
        """The target for pg_dump/pg_restore/psql (secrets via environment or 0600 file)."""
        return ClientTarget(
            {k: str(v) for k, v in self.params.items()}, self.password, self.sslpassword
        )

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.conninfo_without_password,
                password=self.password,
                sslpassword=self.sslpassword,
                connect_timeout=libpq.CONNECT_TIMEOUT_S,
                application_name="sbtc-ops",
                **kwargs,
            )
        except psycopg.OperationalError as exc:
            raise DependencyError(
                f"cannot connect to {self.shown}: {self.scrub(str(exc))}"
            ) from None

    def scrub(self, text: str) -> str:
        return redact.scrub(text.strip(), [s for s in (self.password, self.sslpassword) if s])

    def describe(self) -> dict[str, Any]:
        port = str(self.params.get("port") or "")
        return {
            "host": self.params.get("host"),
            # A multi-host URL has a port list: the manifest records the pinned server's.
            "port": int(port) if port.isdigit() else None,
            "dbname": self.params.get("dbname"),
            "user": self.params.get("user"),
        }

    def pinned_to(self, conn: psycopg.Connection[Any]) -> ConnectionTarget:
        """This target aimed at the one server `conn` reached (see ClientTarget.pinned_to)."""
        pinned = self.client.pinned_to(conn)
        return ConnectionTarget(dict(pinned.params), self.password, self.shown, self.sslpassword)


def parse_target(url: SecretStr | str, what: str = "db_endpoint") -> ConnectionTarget:
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    shown = redact.redact_dsn(raw)
    try:
        params = conninfo_to_dict(raw)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"{what} {shown} is not a valid PostgreSQL URL or connection string"
        ) from None
    client = ClientTarget.from_params(params)
    redact.register(client.password, client.sslpassword)
    return ConnectionTarget(dict(client.params), client.password, shown, client.sslpassword)


@dataclass
class DkgKeyRow:
    aggregate_key: str
    status: str
    created_at: str


@dataclass
class SourceFacts:
    server_version: str
    server_major: int
    tables: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    migrations: list[str] = field(default_factory=list)
    dkg_keys: list[DkgKeyRow] = field(default_factory=list)
    # The canonical schema, from the dump's own snapshot: the live reference a restored
    # backup at this migration level must equal (None: it could not be read).
    schema: CanonicalSchema | None = None

    @property
    def newest_verified_key(self) -> str | None:
        return next((k.aggregate_key for k in self.dkg_keys if k.status == "verified"), None)


class SnapshotSession:
    """An open REPEATABLE READ transaction with an exported snapshot."""

    def __init__(self, target: ConnectionTarget, conn: psycopg.Connection[Any]) -> None:
        self.target = target
        self.conn = conn
        self.snapshot_id = ""
        self.facts: SourceFacts | None = None

    def begin(self) -> SourceFacts:
        with self.conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(
                "SELECT pg_export_snapshot(), current_setting('server_version_num')::int, "
                "current_setting('server_version')"
            )
            snapshot, version_num, version = _one(cur.fetchone())
            self.snapshot_id = str(snapshot)
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SIGNER_SCHEMA,))
            if cur.fetchone() is None:
                raise DependencyError(
                    f"{self.target.shown} has no schema {SIGNER_SCHEMA}: it is not an sBTC signer "
                    "database (check db_endpoint)"
                )
            cur.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND (n.nspname = %s OR "
                "(n.nspname = 'public' AND c.relname = '__sbtc_migrations')) ORDER BY 1",
                (SIGNER_SCHEMA,),
            )
            tables = [str(row[0]) for row in cur.fetchall()]
        self.facts = SourceFacts(str(version).split()[0], int(version_num) // 10000, tables)
        return self.facts

    def read_facts(self, count_tables: list[str] | None = None) -> SourceFacts:
        """Row counts, migrations and DKG keys, all in the exported snapshot."""
        assert self.facts is not None
        facts = self.facts
        with self.conn.cursor() as cur:
            for table in count_tables if count_tables is not None else facts.tables:
                schema, name = table.split(".", 1)
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(name)
                    )
                )
                facts.rows[table] = int(_one(cur.fetchone())[0])
            if MIGRATIONS_TABLE in facts.tables:
                cur.execute("SELECT key FROM public.__sbtc_migrations ORDER BY key")
                facts.migrations = [str(row[0]) for row in cur.fetchall()]
            if f"{SIGNER_SCHEMA}.dkg_shares" in facts.tables:
                cur.execute(
                    "SELECT encode(aggregate_key, 'hex'), dkg_shares_status::text, created_at "
                    "FROM sbtc_signer.dkg_shares ORDER BY created_at DESC, aggregate_key"
                )
                facts.dkg_keys = [
                    DkgKeyRow(str(key), str(status), created.isoformat())
                    for key, status, created in cur.fetchall()
                ]
        try:
            facts.schema = read_canonical_schema(self.conn)
        except psycopg.Error as exc:  # the backup is still good; verify will say unknown-schema
            log.warning("could not read the canonical schema: %s", self.target.scrub(str(exc)))
        return facts


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise SbtcOpsError("the database returned no row where one was expected")
    return row


@contextlib.contextmanager
def snapshot_session(target: ConnectionTarget) -> Iterator[SnapshotSession]:
    conn = target.connect(autocommit=True)
    try:
        yield SnapshotSession(target, conn)
    except psycopg.Error as exc:
        raise DependencyError(
            f"reading the signer database failed: {target.scrub(str(exc))}"
        ) from None
    finally:
        conn.close()


# The DKG watch's poll: cheap (dkg_shares has a handful of rows), and it changes on a new
# round (max created_at, count) and on a status change (counts per status).
DKG_FINGERPRINT_QUERY = (
    "SELECT count(*), max(created_at), "
    "count(*) FILTER (WHERE dkg_shares_status = 'verified'), "
    "count(*) FILTER (WHERE dkg_shares_status = 'unverified'), "
    "count(*) FILTER (WHERE dkg_shares_status = 'failed') "
    "FROM sbtc_signer.dkg_shares"
)


def dkg_fingerprint(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """A value that changes whenever a DKG round is added or changes status."""
    row = conn.execute(DKG_FINGERPRINT_QUERY).fetchone()
    return tuple(row) if row else ()
