"""Database- and role-level facts of the restored database, read and neutralised before the
drill's reader connects.

A restored archive (a plain dump's `ALTER DATABASE … SET`, `ALTER ROLE CURRENT_USER SET`, a
DO block, a function run during the restore) can attach settings to the database or to
roles that every later session applies at connection time: `local_preload_libraries`
refuses every connection, `CONNECTION LIMIT 0` / `ALLOW_CONNECTIONS false` refuse the
reader, `statement_timeout = '1ms'` makes every check fail, `search_path` or `role` change
what the drill's queries mean. pg_dump never writes these for a signer backup (database
settings only with --create, role settings never), so any of them is part of the schema's
identity (a difference: `tampered`); none of them may change the verdict's kind.

So, as the cluster's superuser, from another database (a setting cannot stop that session),
right after the restore: read them into DatabaseFacts, then reset them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Every row of pg_db_role_setting (the cluster is fresh: every row came from the restore),
# and the restored database's connection limit and datallowconn.
_SETTINGS_QUERY = """
SELECT COALESCE(r.rolname, ''), COALESCE(d.datname, ''), s.setconfig
  FROM pg_catalog.pg_db_role_setting s
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
 ORDER BY 1, 2
"""
_DATABASE_QUERY = "SELECT datconnlimit, datallowconn FROM pg_catalog.pg_database WHERE datname = %s"


@dataclass(frozen=True)
class Setting:
    """One `name=value` attached to a database (role ""), a role (database ""), or both."""

    role: str
    database: str
    setting: str

    @property
    def scope(self) -> str:
        if self.role and self.database:
            return f"role {self.role} in database {self.database}"
        if self.role:
            return f"role {self.role}"
        return f"database {self.database}" if self.database else "every role"


@dataclass(frozen=True)
class DatabaseFacts:
    """What the restore attached to the database and roles, before it was neutralised."""

    settings: tuple[Setting, ...] = ()
    connection_limit: int = -1
    allow_connections: bool = True

    @property
    def findings(self) -> list[str]:
        """Each fact that a signer backup never carries, in words (empty: none)."""
        found = [f"{s.scope} setting {s.setting}" for s in self.settings]
        if self.connection_limit != -1:
            found.append(f"database connection limit {self.connection_limit}")
        if not self.allow_connections:
            found.append("database does not allow connections (ALLOW_CONNECTIONS false)")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": [
                {"role": s.role or None, "database": s.database or None, "setting": s.setting}
                for s in self.settings
            ],
            "connection_limit": self.connection_limit,
            "allow_connections": self.allow_connections,
        }


def read_and_neutralise(admin: psycopg.Connection[Any], dbname: str) -> DatabaseFacts:
    """Read the facts, then undo them: `admin` is a superuser connection (autocommit) to a
    database other than `dbname`. Role settings of every role are reset (roles of the drill
    included: the restore role may have set its own)."""
    settings = tuple(
        Setting(str(role), str(database), str(item))
        for role, database, config in admin.execute(_SETTINGS_QUERY).fetchall()
        for item in (config or [])
    )
    row = admin.execute(_DATABASE_QUERY, (dbname,)).fetchone()
    limit, allow = (int(row[0]), bool(row[1])) if row else (-1, True)
    target = sql.Identifier(dbname)
    admin.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1").format(target)
    )
    for role, database, _config in admin.execute(_SETTINGS_QUERY).fetchall():
        who = sql.SQL("ALL") if not role else sql.Identifier(str(role))
        where = (
            sql.SQL(" IN DATABASE {}").format(sql.Identifier(str(database)))
            if database
            else sql.SQL("")
        )
        if role:
            admin.execute(sql.SQL("ALTER ROLE {}{} RESET ALL").format(who, where))
        elif database:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RESET ALL").format(sql.Identifier(str(database)))
            )
        else:
            admin.execute(sql.SQL("ALTER ROLE ALL RESET ALL"))
    return DatabaseFacts(settings, limit, allow)
