"""The sBTC signer's own migrations, read from a stacks-sbtc/sbtc git repository and applied
the way the signer applies them. Maintainer and test tooling only.

Nothing of that repository is copied into sbtc-ops: the scripts are read from the operator's
(or maintainer's) checkout at run time, executed in a throwaway database, and only facts about
the result (migration names, object names, digests) are kept.

How the signer applies them (signer/src/storage/postgres, `apply_migrations`, v1.0.0 to
HEAD), restated:
- every connection of its pool sets `application_name = 'sbtc-signer'` and
  `search_path = sbtc_signer, public` (0019 creates `p2p_peers` unqualified: it lands in
  sbtc_signer because of that search path);
- it creates `public.__sbtc_migrations (key TEXT PRIMARY KEY)` if missing, outside any
  transaction;
- then, in ONE transaction, it runs every embedded `signer/migrations/*.sql` sorted by file
  name that is not yet recorded, each as one simple-protocol multi-statement query, and
  records its file name in `public.__sbtc_migrations` (since v1.1.0, PR #1761, the record is
  written in that transaction too; on a fresh database the outcome is the same).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.errors import DependencyError, UsageError
from sbtc_ops.proc import die_with_parent

MIGRATIONS_DIR = "signer/migrations"
MIGRATION_NAME = re.compile(r"^\d{4}__[A-Za-z0-9_]+\.sql$")
GIT_TIMEOUT_S = 60
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
SESSION_SETUP = "SET application_name = 'sbtc-signer'; SET search_path = sbtc_signer, public"
CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS public.__sbtc_migrations (key TEXT PRIMARY KEY)"
)
RECORD_MIGRATION = "INSERT INTO public.__sbtc_migrations (key) VALUES (%s)"


@dataclass(frozen=True)
class Migration:
    name: str  # the file name, as the signer records it
    blob: str  # git object id of the file: equal ids, equal scripts
    script: bytes


@dataclass(frozen=True)
class SignerRepository:
    """A stacks-sbtc/sbtc repository: a bare git directory, a `.git` directory, or a checkout."""

    git_dir: Path

    @classmethod
    def at(cls, path: Path) -> SignerRepository:
        path = path.expanduser().resolve()
        for candidate in (path / ".git", path):
            if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
                return cls(candidate)
        raise UsageError(f"{path} is not a git repository (no HEAD and objects/ in it or .git/)")

    def git(self, *args: str) -> bytes:
        argv = ["git", f"--git-dir={self.git_dir}", *args]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
                preexec_fn=die_with_parent(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DependencyError(f"git {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise DependencyError(f"git {' '.join(args)}: {' | '.join(message[-3:])}")
        return done.stdout

    def commit_of(self, revision: str) -> str:
        return self.git("rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()

    def migration_files(self, revision: str) -> list[tuple[str, str]]:
        """(file name, blob id) of every file in signer/migrations/ at `revision`, by name."""
        listing = self.git("ls-tree", "-z", revision, f"{MIGRATIONS_DIR}/").decode()
        files = []
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            mode_type_id = meta.split()
            if len(mode_type_id) == 3 and mode_type_id[1] == "blob":
                files.append((path.rsplit("/", 1)[-1], mode_type_id[2]))
        return sorted(files)

    def migrations(self, revision: str) -> list[Migration]:
        """The `.sql` migrations at `revision`, in the order the signer applies them."""
        found = []
        for name, blob in self.migration_files(revision):
            if not name.endswith(".sql"):
                continue  # the signer skips non-SQL files (PR #2068)
            if not MIGRATION_NAME.match(name):
                raise UsageError(f"unexpected migration file name at {revision}: {name!r}")
            script = self.git("cat-file", "blob", blob)
            if len(script) > MAX_SCRIPT_BYTES:
                raise UsageError(f"migration {name} at {revision} is larger than expected")
            found.append(Migration(name, blob, script))
        return found


def apply_migrations(conn: Any, migrations: Sequence[Migration]) -> list[str]:
    """Apply `migrations` to the (fresh) database of `conn` as the signer does; return the
    recorded names. `conn` is a psycopg connection in autocommit mode."""
    if not conn.autocommit:
        raise UsageError("apply_migrations needs a connection in autocommit mode")
    conn.execute(SESSION_SETUP)
    conn.execute(CREATE_MIGRATIONS_TABLE)
    with conn.transaction():
        for migration in sorted(migrations, key=lambda m: m.name):
            try:
                text = migration.script.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"migration {migration.name} is not UTF-8") from None
            # No parameters: psycopg sends it with the simple query protocol, several
            # statements in one query, as sqlx's raw_sql does for the signer.
            conn.execute(text.encode())
            conn.execute(RECORD_MIGRATION, (migration.name,))
    rows = conn.execute("SELECT key FROM public.__sbtc_migrations ORDER BY key").fetchall()
    return [str(row[0]) for row in rows]
