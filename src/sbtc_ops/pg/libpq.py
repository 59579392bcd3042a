"""Starting libpq clients (pg_dump, pg_restore, psql) against an operator's own server.

They see what sbtc-ops' own connection sees: the operator's libpq environment (PGPASSWORD,
PGPASSFILE / ~/.pgpass, PGSERVICE / pg_service.conf, PGSSLMODE, PGSSLROOTCERT, …) is kept,
and the conninfo on the command line holds every non-secret parameter of the configured URL.
Secrets never go into argv (anyone can read it in `ps`): a password from the URL goes into
the child's PGPASSWORD; an `sslpassword`, for which libpq reads no environment variable,
into a service file (0600, in a 0700 directory removed afterwards) named by PGSERVICEFILE.

After sbtc-ops has connected, `ClientTarget.pinned_to(conn)` aims the child at the server
that connection reached, so a multi-host URL (`h1:5432,h2:5432`) cannot send pg_dump to a
different server than the one whose snapshot it imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from sbtc_ops.errors import ConfigError
from sbtc_ops.files import PRIVATE_FILE_MODE
from sbtc_ops.redact import DSN_SECRET_KEYS

CONNECT_TIMEOUT_S = 10
SECRETS_SERVICE = "sbtc-ops-secrets"


@dataclass(frozen=True)
class ClientTarget:
    """A libpq target split into its non-secret parameters and its secrets."""

    params: Mapping[str, str]
    password: str | None = None
    sslpassword: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ClientTarget:
        """From libpq's parse of a URL or DSN (`conninfo_to_dict`)."""
        public = {k: str(v) for k, v in params.items() if v is not None}
        password = public.pop("password", None)
        sslpassword = public.pop("sslpassword", None)
        assert not DSN_SECRET_KEYS & public.keys()
        return cls(public, password, sslpassword)

    def pinned_to(self, conn: Any) -> ClientTarget:
        """The same target, aimed at the one server, database and role `conn` (a psycopg
        connection) reached, wherever libpq took them from (URL, environment, service)."""
        info = conn.info
        params = dict(self.params)
        params["host"] = str(info.host)
        params["port"] = str(info.port)
        params["dbname"] = str(info.dbname)
        params["user"] = str(info.user)
        hostaddr = str(getattr(info, "hostaddr", "") or "")
        if hostaddr and not params["host"].startswith("/"):
            params["hostaddr"] = hostaddr
        else:
            params.pop("hostaddr", None)
        return replace(self, params=params)

    @property
    def conninfo(self) -> str:
        """The conninfo for argv: no secret in it."""
        return make_conninfo(**self.params)


@dataclass(frozen=True)
class ClientInvocation:
    """What a child libpq program gets: `--dbname` conninfo and its environment."""

    conninfo: str
    env: dict[str, str]


@contextmanager
def client_invocation(
    target: ClientTarget, environ: Mapping[str, str] | None = None
) -> Iterator[ClientInvocation]:
    """Conninfo and environment for a pg_dump/pg_restore/psql aimed at `target`; the service
    file holding an sslpassword (if any) exists only inside the block."""
    env = dict(os.environ if environ is None else environ)
    env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_S)
    env["PGAPPNAME"] = "sbtc-ops"
    if target.password is not None:
        env["PGPASSWORD"] = target.password  # the URL's password wins, as for our connection
    if not target.sslpassword:
        yield ClientInvocation(target.conninfo, env)
        return
    _check_service_use(target, target.sslpassword, env)
    directory = Path(tempfile.mkdtemp(prefix="sbtc-ops-libpq-"))  # 0700
    try:
        env["PGSERVICEFILE"] = str(_write_service_file(directory, target.sslpassword))
        conninfo = make_conninfo(**target.params, service=SECRETS_SERVICE)
        yield ClientInvocation(conninfo, env)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check_service_use(target: ClientTarget, sslpassword: str, env: Mapping[str, str]) -> None:
    if "service" in target.params or env.get("PGSERVICE"):
        raise ConfigError(
            "the database URL has an sslpassword and also names a libpq service; sbtc-ops "
            "passes the sslpassword to pg_dump through a service file of its own",
            hint="put sslpassword into your pg_service.conf entry instead of the URL",
        )
    # A service file line is `key=value`; libpq trims the line's end, and a line break or
    # NUL cannot be written at all.
    if sslpassword != sslpassword.strip() or any(ch in sslpassword for ch in "\r\n\0"):
        raise ConfigError(
            "the sslpassword cannot be passed to pg_dump: it starts or ends with whitespace "
            "or holds a line break"
        )


def _write_service_file(directory: Path, sslpassword: str) -> Path:
    path = directory / "pg_service.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"[{SECRETS_SERVICE}]\nsslpassword={sslpassword}\n")
    return path
