#!/usr/bin/env python3
"""Regenerate src/sbtc_ops/signer/schema_digests.toml from a stacks-sbtc/sbtc repository.

Maintainer tool; run it with the project's venv:

    python scripts/schema_digests.py /path/to/sbtc            # a checkout or a git directory
    python scripts/schema_digests.py /path/to/sbtc --check    # exit 1 if the table is stale
    python scripts/schema_digests.py /path/to/sbtc --compare-bin-dir /usr/lib/postgresql/15/bin

For every release in signer/releases.toml it reads `signer/migrations/*.sql` at the release's
tag (checking that the tag is still the recorded commit and that the file names are the
table's), applies them as the signer does (sbtc_ops.devtools.signer_migrations) into a fresh
database of a throwaway cluster, reads the canonical schema
(sbtc_ops.pg.schema_identity.read_canonical_schema) and writes one [[level]] per distinct
migration list. Only facts are written or printed: migration file names, object keys and
digests. The migrations' SQL never reaches the table, this program's output or its errors
(a failing script is reported by its file name, SQLSTATE and the server's primary message).

--compare-bin-dir also applies every level on another PostgreSQL (e.g. 15) and checks that
the canonical schema read there, and read on the main server after a pg_dump/pg_restore of
it, has the same digest; differing object keys are listed (names only), exit 1 if any.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from sbtc_ops.devtools.signer_migrations import Migration, SignerRepository, apply_migrations
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg import ThrowawayCluster, find_binaries
from sbtc_ops.pg.schema_identity import CanonicalSchema, escape, read_canonical_schema
from sbtc_ops.signer import schema_refs
from sbtc_ops.signer.knowledge import HEAD, Knowledge, load

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT / "src" / "sbtc_ops" / "signer" / schema_refs.TABLE_NAME
DUMP_TIMEOUT_S = 300


@dataclass
class Level:
    """Releases sharing one migration list (same names, same file contents)."""

    releases: list[str]  # tags, oldest first
    migrations: list[Migration]
    digest: str = ""
    objects: tuple[str, ...] = ()
    object_digests: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.migrations]

    @property
    def release(self) -> str:
        tagged = [r for r in self.releases if r != HEAD]
        return tagged[-1] if tagged else self.releases[-1]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- which migrations each release ships ---------------------------------------------------------


def collect_levels(repo: SignerRepository, knowledge: Knowledge) -> list[Level]:
    levels: dict[tuple[tuple[str, str], ...], Level] = {}
    for release in knowledge.releases:
        revision = release.tag if release.version != HEAD else release.commit
        commit = repo.commit_of(revision)
        if commit != release.commit:
            raise SbtcOpsError(
                f"{release.tag} is commit {commit[:12]} in the repository but "
                f"{release.commit[:12]} in releases.toml: check the tag, then update the table"
            )
        migrations = repo.migrations(revision)
        names = tuple(m.name for m in migrations)
        if names != knowledge.migrations_at(release.version):
            raise SbtcOpsError(
                f"{release.tag}: signer/migrations/ does not list what releases.toml says; "
                "update releases.toml first"
            )
        key = tuple((m.name, m.blob) for m in migrations)
        levels.setdefault(key, Level([], migrations)).releases.append(release.tag)
    return list(levels.values())


# -- applying and reading ----------------------------------------------------------------------


def describe_failure(migration_names: list[str], exc: psycopg.Error) -> str:
    """SQLSTATE and the primary message only: str(exc) may quote the script's text."""
    diag = exc.diag
    return (
        f"applying {migration_names[-1] if migration_names else 'migrations'} failed: "
        f"{diag.sqlstate or '?'} {diag.message_primary or type(exc).__name__}"
    )


def apply_level(cluster: ThrowawayCluster, dbname: str, level: Level) -> CanonicalSchema:
    cluster.create_database(dbname)
    try:
        with cluster.connect(dbname) as conn:
            applied = apply_migrations(conn, level.migrations)
    except psycopg.Error as exc:
        raise SbtcOpsError(describe_failure(level.names, exc)) from None
    if applied != level.names:
        raise SbtcOpsError(f"{dbname}: recorded migrations differ from the applied ones")
    with cluster.connect(dbname) as conn:
        return read_canonical_schema(conn)


def dump_and_restore(
    source: ThrowawayCluster, target: ThrowawayCluster, dbname: str, workdir: Path
) -> CanonicalSchema:
    """pg_dump (the target's, i.e. the drill's, version) from source into target; read it."""
    archive = workdir / f"{dbname}.dump"
    dump = [str(target.binaries.pg_dump), "-Fc", "-f", str(archive), "-d", dbname]
    run_client(dump, source.client_env())
    restored = f"{dbname}_restored"
    target.create_database(restored)
    restore = [str(target.binaries.pg_restore), "--no-owner", "--no-privileges", "-d", restored]
    run_client([*restore, "--exit-on-error", str(archive)], target.client_env())
    with target.connect(restored) as conn:
        return read_canonical_schema(conn)


def run_client(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        # pg_restore's errors quote the failing statement: report only that it failed.
        raise SbtcOpsError(f"{Path(argv[0]).name} failed (exit {done.returncode})")


def differing_keys(expected: CanonicalSchema, actual: CanonicalSchema) -> list[str]:
    keys = expected.objects.keys() | actual.objects.keys()
    return sorted(k for k in keys if expected.objects.get(k) != actual.objects.get(k))


# -- the table -----------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes, plus DEL, which TOML wants escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_list(values: list[str] | tuple[str, ...], indent: str = "  ") -> str:
    if not values:
        return "[]"
    return "[\n" + "".join(f"{indent}{toml_string(v)},\n" for v in values) + "]"


def render_table(levels: list[Level], postgres: str) -> str:
    lines = [
        "# Canonical-schema digests of the sBTC signer's migration levels, one [[level]] per",
        "# distinct list of migrations shipped by the releases in releases.toml.",
        "# GENERATED by scripts/schema_digests.py from a stacks-sbtc/sbtc checkout: do not edit",
        "# by hand (docs/schema-references.md). Facts only: migration file names, object keys",
        "# of sbtc_ops.pg.schema_identity's canonical form (names, never definitions), the",
        "# sha256 digest of that form, and per object (object_digests, in objects' order) the",
        "# first 16 hex digits of the sha256 of its canonical definition, to name what changed.",
        "# tests/test_schema_refs.py keeps it consistent.",
        "",
        "schema = 1",
        'repository = "stacks-sbtc/sbtc"',
        f"postgres = {toml_string(postgres)}",
    ]
    for level in levels:
        lines += [
            "",
            "[[level]]",
            f"release = {toml_string(level.release)}",
            f"releases = {json.dumps(level.releases)}",
            f"newest = {toml_string(level.names[-1])}",
            f"digest = {toml_string(level.digest)}",
            f"migrations = {toml_list(level.names)}",
            f"objects = {toml_list(level.objects)}",
            f"object_digests = {toml_list(level.object_digests)}",
        ]
    text = "\n".join(lines) + "\n"
    schema_refs.parse(text)  # what we write must load
    return text


def write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- main -----------------------------------------------------------------------------------------


@contextmanager
def clusters(
    bin_dir: Path | None, compare_bin_dir: Path | None
) -> Iterator[tuple[ThrowawayCluster, ThrowawayCluster | None]]:
    """The main cluster (the drill's PostgreSQL unless --bin-dir) and the one to compare with."""
    with ExitStack() as stack:

        def start(directory: Path | None) -> ThrowawayCluster:
            binaries = find_binaries(directory, tool_hint="postgres")
            return stack.enter_context(ThrowawayCluster(binaries, announce=say))

        main = start(bin_dir)
        yield main, start(compare_bin_dir) if compare_bin_dir is not None else None


def compute(
    levels: list[Level], main: ThrowawayCluster, other: ThrowawayCluster | None, workdir: Path
) -> int:
    problems = 0
    for number, level in enumerate(levels, start=1):
        schema = apply_level(main, f"level_{number}", level)
        level.digest, level.objects = schema.digest, tuple(sorted(schema.objects))
        level.object_digests = tuple(
            schema_refs.object_digest(schema.objects[key]) for key in level.objects
        )
        say(
            f"{', '.join(level.releases)}: {len(level.names)} migrations, "
            f"{len(level.objects)} objects, digest {level.digest}"
        )
        if other is None:
            continue
        found = {
            "read there": apply_level(other, f"level_{number}", level),
            "dumped and restored": dump_and_restore(other, main, f"level_{number}", workdir),
        }
        for how, read in found.items():
            different = differing_keys(schema, read)
            problems += bool(different)
            verdict = "same digest" if not different else f"{len(different)} objects differ"
            say(f"  PostgreSQL {other.binaries.version}, {how}: {verdict}")
            for key in different:
                say(f"    {escape(key)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path, help="stacks-sbtc/sbtc checkout or git dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    parser.add_argument("--bin-dir", type=Path, help="PostgreSQL to apply on (default: embedded)")
    parser.add_argument("--compare-bin-dir", type=Path, help="another PostgreSQL to compare with")
    args = parser.parse_args(argv)
    try:
        levels = collect_levels(SignerRepository.at(args.repository), load())
        with clusters(args.bin_dir, args.compare_bin_dir) as (main_cluster, other):
            with tempfile.TemporaryDirectory(prefix="schema-digests-") as workdir:
                problems = compute(levels, main_cluster, other, Path(workdir))
            text = render_table(levels, main_cluster.binaries.version)
    except SbtcOpsError as exc:
        say(f"error: {exc}")
        return 2
    if args.check:
        current = args.out.read_text("utf-8") if args.out.exists() else ""
        # The levels, not the server version the table was made on: 18.6 and 18.7 agree.
        same = bool(current) and schema_refs.parse(current).levels == schema_refs.parse(text).levels
        say(f"{args.out}: {'up to date' if same else 'STALE: regenerate it'}")
        return 0 if same and not problems else 1
    write_atomically(args.out, text)
    say(f"wrote {args.out} ({len(levels)} levels)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
