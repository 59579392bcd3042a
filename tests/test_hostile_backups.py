"""The hostile archive corpus of issue 12: backups that try to act on the host running
`sbtc-ops verify` (as root, next to the signer's private key).

Each case is one archive built here from a realistic signer database plus one hostile part.
For each: exit 1 and no `match`; no canary file written (by any user) in a world-writable
directory; no process of the payload left running; no postgres left; and none of the secrets
in sbtc-ops' environment visible to the payload (every payload writes `env` to its canary).
Clean backups still pass, and `schema.identity` names what does not belong (the base
database's schema is pinned as the reference, as an operator pins a live signer's).
Clean backups of every format are covered by tests/test_verify_formats.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
import pytest

from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.pg import find_binaries
from sbtc_ops.pg.runas import resolve_run_as
from tests.support.backup import sbtc_ops_popen
from tests.support.cli import clean_env, run_cli
from tests.support.hostile import (
    BOMB_LIMIT_BYTES,
    INERT_OBJECTS,
    VECTORS,
    VERIFY_PREFIX,
    Canary,
    Secrets,
    archive_copies,
    assert_canary_untouched,
    copy_database,
    descendants,
    detached_shell,
    gzip_bomb,
    kill_marker_processes,
    make_stale_cluster_dirs,
    marker_processes,
    pg_dump,
    plain_with,
    process_comm,
    remove_tree,
    search_path_trap,
    short_tmpdir,
    sleep_marker,
    vector_archive,
    verify_watched,
    wait_for,
    world_writable_dir,
    zstd_bomb,
)
from tests.support.hostile_s3 import HostileS3Proxy
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.s3 import S3Server
from tests.support.verify import Verifier, VerifyRun, pin_schema, take_backup

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

BASE_DB = "hostile_base"
NOT_TRUSTED = {"tampered", "corrupt"}
FORMATS = {"c": "custom", "d": "directory"}


@dataclass
class Corpus:
    root: Path
    server: SourceServer
    facts: GeneratedDb
    canary_dir: Path
    sleep_marker: str
    verify: Verifier
    clean: dict[str, Path]  # format -> clean archive of the base DB
    hostile: dict[str, tuple[Path, Canary]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.facts.newest_verified_key.hex()

    def canary(self, case: str) -> Canary:
        return Canary(self.canary_dir, "".join(c if c.isalnum() else "-" for c in case))

    def run(self, archive: Path, env: dict[str, str] | None = None) -> VerifyRun:
        return self.verify(str(archive), "--expected-key", self.key, env=env)


# Plain SQL: psql meta-commands after the dump's own `\unrestrict`.
PLAIN_META: dict[str, Callable[[Canary], str]] = {
    "plain \\!": lambda c: f"\\! {c.shell()}",
    "plain \\o": lambda c: f"\\o {c.path}\nSELECT current_user, version();\n\\o",
    "plain \\copy": lambda c: f"\\copy (SELECT current_user) TO '{c.path}'",
}
# What each hostile case tries (one line of intent per corpus entry).
INTENT = {
    "plain \\!": "psql runs a shell command as the user that replays the dump",
    "plain \\o": "psql writes query output into a file of the attacker's choice",
    "plain \\copy": "psql writes a client-side COPY into a file of the attacker's choice",
    "index": "an index expression calls a function that runs COPY TO PROGRAM",
    "matview": "refreshing a materialized view calls COPY TO PROGRAM",
    "trigger": "a trigger, moved before the data in the TOC, fires on every loaded row",
    "column-default": "a generated column's default expression runs for every loaded row",
    "event-trigger": "an event trigger fires on the drill's own DDL (installing amcheck)",
    "plain search_path": "ALTER DATABASE SET search_path puts an `=` trap before pg_catalog",
}
VECTOR_CASES = [f"{fmt} {vector}" for vector in VECTORS for fmt in FORMATS.values()]
HOSTILE_CASES = [*PLAIN_META, *VECTOR_CASES, "plain search_path"]


def intent(case: str) -> str:
    return INTENT.get(case) or INTENT[case.split(" ", 1)[1]]


@pytest.fixture(scope="module")
def corpus(
    source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("hostile")
    canary_dir = world_writable_dir("sbtc-canary-")
    marker = sleep_marker()
    try:
        _, facts = new_signer_database(source_server, target_mb=0.1, seed=12, dbname=BASE_DB)
        archives = root / "archives"
        archives.mkdir()
        clean = {
            "custom": pg_dump(source_server, BASE_DB, archives / "clean.dump", "c"),
            "plain": pg_dump(source_server, BASE_DB, archives / "clean.sql", "p"),
        }
        reference = root / "reference-state"
        pin_schema(source_server.url_for(BASE_DB), reference)
        verify = Verifier(root / "work", reference_from=reference)
        corpus = Corpus(root, source_server, facts, canary_dir, marker, verify, clean)
        _build_hostile(corpus, archives)
        yield corpus
    finally:
        kill_marker_processes(marker)
        remove_tree(canary_dir)


def _build_hostile(corpus: Corpus, archives: Path) -> None:
    for case, meta in PLAIN_META.items():
        canary = corpus.canary(case)
        target = archives / f"{canary.name}.sql"
        corpus.hostile[case] = (plain_with(corpus.clean["plain"], target, meta(canary)), canary)
    for fmt, fmt_name in FORMATS.items():
        for vector in VECTORS.values():
            case = f"{fmt_name} {vector.name}"
            canary = corpus.canary(case)
            target = archives / f"{canary.name}.{'dump' if fmt == 'c' else 'dir'}"
            # Every payload also leaves a process of its own behind, in its own session.
            command = f"{detached_shell(corpus.sleep_marker)} {canary.shell()}"
            archive = vector_archive(corpus.server, BASE_DB, vector, command, target, fmt)
            corpus.hostile[case] = (archive, canary)
    case = "plain search_path"
    canary = corpus.canary(case)
    trap = search_path_trap(canary.shell())
    corpus.hostile[case] = (
        plain_with(corpus.clean["plain"], archives / "search_path.sql", trap),
        canary,
    )


def assert_no_payload_process(corpus: Corpus, why: str) -> None:
    left = marker_processes(corpus.sleep_marker)
    kill_marker_processes(corpus.sleep_marker)
    assert not left, f"{why}: a process it started outlived the run: {left}"


# -- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_archive_has_no_effect_outside_the_throwaway_database(
    corpus: Corpus, case: str
) -> None:
    archive, canary = corpus.hostile[case]
    hidden = Secrets()
    run = corpus.run(archive, env=hidden.env())
    assert_no_payload_process(corpus, intent(case))
    assert_canary_untouched(canary, hidden.markers(), intent(case))
    context = f"{case}: {intent(case)}\n{run.result.stdout[-3000:]} {run.result.stderr[-2000:]}"
    assert run.code == 1, context
    assert run.doc["verdict"] != "match", context
    run.check("schema.identity")  # reported on every run
    vector = VECTORS.get(case.split(" ", 1)[1])
    if vector is not None:
        assert_foreign_objects_reported(run, vector.objects, refused=True)


@pytest.mark.parametrize("case", VECTOR_CASES)
def test_corpus_archive_carries_its_payload_where_pg_restore_runs_it(
    corpus: Corpus, case: str
) -> None:
    """Guards the corpus itself (a payload that never fires would make the cases above pass
    for nothing): pg_restore's script holds the armed COPY TO PROGRAM, and the trigger is
    created before the rows it fires on."""
    archive, canary = corpus.hostile[case]
    script = restore_script(archive)
    assert "TO PROGRAM" in script and canary.shell() in script, case
    assert detached_shell(corpus.sleep_marker) in script, case
    assert "SET hostile.disarmed" not in script, case  # armed in any restore
    if case.endswith(" trigger"):
        assert script.index("CREATE TRIGGER dkg_shares_audit") < script.index(
            "COPY sbtc_signer.dkg_shares"
        )


def restore_script(archive: Path) -> str:
    """What pg_restore would send to the server, as SQL text (nothing is restored)."""
    done = subprocess.run(
        [str(find_binaries(tool_hint="pg_restore").pg_restore), "--file=-", str(archive)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_foreign_objects_reported(run: VerifyRun, names: tuple[str, ...], refused: bool) -> None:
    """`schema.identity` fails naming `names`, verdict tampered; when the sandbox
    refused part of the archive (`refused`) and the restore failed, tampered or corrupt."""
    context = f"{run.result.stdout[-3000:]} {run.result.stderr[-2000:]}"
    assert run.code == 1, context
    if refused and run.check("restore.complete")["status"] != "pass":
        assert run.doc["verdict"] in NOT_TRUSTED, context
        return
    check = run.check("schema.identity")
    assert check["status"] == "fail", context
    shown = check["detail"] + " ".join(check["data"].get("differences", []))
    assert all(name in shown for name in names), check
    assert run.doc["verdict"] == "tampered", context


@pytest.mark.parametrize("kind", list(INERT_OBJECTS))
def test_foreign_objects_are_named_and_the_backup_not_trusted(corpus: Corpus, kind: str) -> None:
    statements, names, owner_can_restore = INERT_OBJECTS[kind]
    dbname = "foreign_" + "".join(c if c.isalnum() else "_" for c in kind)
    copy_database(corpus.server, BASE_DB, dbname, statements)
    archive = pg_dump(corpus.server, dbname, corpus.root / f"{dbname}.dump", "c")
    run = corpus.run(archive)
    if owner_can_restore:
        assert run.check("restore.complete")["status"] == "pass", run.result.stdout
    assert_foreign_objects_reported(run, names, refused=not owner_can_restore)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_clean_signer_backup_is_identical_to_the_reference(corpus: Corpus, fmt: str) -> None:
    run = corpus.run(corpus.clean[fmt])
    run.expect(code=0, verdict="match")
    assert run.check("schema.identity")["status"] == "pass"


# -- decompression bombs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    return {
        "gzip": gzip_bomb(root / "signer.sql.gz"),
        "zstd": zstd_bomb(root / "signer.sql.zst"),
    }


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompression_bomb_is_capped_and_cleaned_up(
    corpus: Corpus, bombs: dict[str, Path], kind: str
) -> None:
    tmpdir = short_tmpdir()
    try:
        run = verify_watched(
            [str(bombs[kind]), "--expected-key", corpus.key],
            tmpdir, corpus.verify.fresh_state(), corpus.verify.workdir,
        )  # fmt: skip
        assert_no_postgres_left(tmpdir)
        leftovers = sorted(p.name for p in tmpdir.iterdir())
    finally:
        remove_tree(tmpdir)
    result = run.result
    assert "Traceback" not in result.stderr, result.stderr
    assert run.peak_staged <= BOMB_LIMIT_BYTES, f"verify staged {run.peak_staged} bytes"
    assert not leftovers, leftovers
    doc = result.json()
    assert result.code == 2 or (result.code == 1 and doc["verdict"] == "corrupt"), result.stdout


# -- a cluster user's traps in TMPDIR ---------------------------------------------------------------


def test_fifo_and_symlink_planted_in_stale_cluster_dirs_neither_hang_nor_follow(
    corpus: Corpus,
) -> None:
    """A FIFO as a stale cluster's owner.pid must not hang the run; a `sbtc-pg-*` symlink
    must not be followed (its target looks stale, and holds a sentinel)."""
    run_as = resolve_run_as(None)
    tmpdir = short_tmpdir("sf-", mode=0o755)
    sentinel = make_stale_cluster_dirs(tmpdir, run_as.uid, run_as.gid)
    try:
        env = clean_env(corpus.verify.fresh_state(), {"TMPDIR": str(tmpdir)})
        try:
            result = run_cli(
                "verify", str(corpus.clean["custom"]), "--expected-key", corpus.key, "--json",
                cwd=corpus.verify.workdir, env=env, timeout=120,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail("verify hung on a FIFO planted as a stale cluster's owner.pid")
        assert_no_postgres_left(tmpdir)
        assert sentinel.read_text() == "must survive\n"
        assert (sentinel.parent / "owner.pid").exists()
    finally:
        remove_tree(tmpdir)
        remove_tree(sentinel.parent)
    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["verdict"] == "match"


# -- kill -9 mid-run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted_backup(corpus: Corpus) -> tuple[Path, Path]:
    """(an age-encrypted sbtc-ops backup of the base DB, the identity file)."""
    identity = pyrage.x25519.Identity.generate()
    identity_file = corpus.root / "identity.txt"
    descriptor = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{identity}\n")
    url = corpus.server.url_for(BASE_DB)
    repo = corpus.root / "encrypted-repo"
    _, backup_dir = take_backup(
        url, repo, corpus.root / "backup-state", "--recipient", str(identity.to_public())
    )
    return backup_dir, identity_file


def test_kill_9_mid_verify_leaves_no_clear_archive_after_the_next_run(
    corpus: Corpus, encrypted_backup: tuple[Path, Path]
) -> None:
    backup_dir, identity_file = encrypted_backup
    args = [
        "verify",
        str(backup_dir),
        "--identity",
        str(identity_file),
        "--expected-key",
        corpus.key,
        "--json",
    ]
    tmpdir = short_tmpdir("sk-")
    state = corpus.verify.fresh_state()
    try:
        proc = sbtc_ops_popen(
            *args, state_dir=state, cwd=corpus.verify.workdir, env={"TMPDIR": str(tmpdir)}
        )
        try:
            wait_for(lambda: staging_dir_made(tmpdir) or proc.poll() is not None, 60, "staging")
            # Killed once the archive is being restored: decrypted by then, wherever it is.
            wait_for(lambda: restoring(proc.pid) or proc.poll() is not None, 60, "the restore")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        env = clean_env(state, {"TMPDIR": str(tmpdir)})
        again = run_cli(*args, cwd=corpus.verify.workdir, env=env, timeout=120)
        assert again.code == 0, again.stdout + again.stderr
        assert_no_postgres_left(tmpdir)
        staging = [p.name for p in tmpdir.iterdir() if p.name.startswith(VERIFY_PREFIX)]
        clear = archive_copies(tmpdir)
    finally:
        remove_tree(tmpdir)
    assert not staging and not clear, f"outlived a kill -9: staging {staging}, archives {clear}"


def staging_dir_made(tmpdir: Path) -> bool:
    return any(p.name.startswith(VERIFY_PREFIX) for p in tmpdir.iterdir())


def restoring(pid: int) -> bool:
    return any(process_comm(child) in ("pg_restore", "psql") for child in descendants(pid))


# -- S3 object keys and manifest names -------------------------------------------------------------

EVIL_ID = "29991231T235959Z"  # newest: what `verify --latest` (and `serve`'s weekly job) picks


def outside(canary_dir: Path, name: str) -> tuple[str, str]:
    """Two ways for a relative name to land in `canary_dir`: `..` up to / and an absolute
    path (after `pfx/ID/` it makes the empty segment of `pfx/ID//tmp/x`)."""
    dotdot = "../" * 16 + str(canary_dir.relative_to("/")) + f"/{name}-dotdot"
    return dotdot, f"{canary_dir}/{name}-abs"


@pytest.mark.s3
def test_s3_keys_and_manifest_names_never_write_outside_the_staging_dir(
    corpus: Corpus, s3_server: S3Server
) -> None:
    bucket = s3_server.create_bucket("hostile")
    location = f"s3://{bucket}/pfx"
    canary_dir = world_writable_dir("sbtc-canary-s3-")
    try:
        backup = run_cli(
            "backup", "--db", corpus.server.url_for(BASE_DB), "--to", location, "--json",
            cwd=corpus.verify.workdir, env=clean_env(corpus.verify.fresh_state(), s3_server.env()),
        )  # fmt: skip
        assert backup.code == 0, backup.stderr
        good_id = backup.json()["backup"]["id"]
        payload = b"written by a hostile object key\n"
        extra = {f"pfx/{good_id}/{name}": payload for name in outside(canary_dir, "key")}
        evil_names = [*outside(canary_dir, "manifest"), "a\x00b"]
        extra |= {f"pfx/{EVIL_ID}/{name}": payload for name in evil_names}
        upload_evil_manifest(s3_server, bucket, good_id, evil_names, payload)
        with HostileS3Proxy(s3_server.endpoint_url, bucket, extra) as proxy:
            env = {**s3_server.env(), "SBTC_OPS_BACKUP__S3__ENDPOINT_URL": proxy.endpoint_url}
            runs, written = {}, {}
            for which in [(good_id,), ("--latest",), (EVIL_ID,)]:
                runs[which] = corpus.verify(*which, "--repo", location, "--expected-key", corpus.key, env=env)  # fmt: skip
                written[which] = sorted(p.name for p in canary_dir.iterdir())
    finally:
        remove_tree(canary_dir)
    assert not any(written.values()), f"verify wrote outside its staging dir: {written}"
    evil = runs[(EVIL_ID,)]
    assert evil.code in (1, 2), evil.result.stdout + evil.result.stderr
    assert evil.doc.get("verdict") != "match"


def upload_evil_manifest(
    s3_server: S3Server, bucket: str, good_id: str, names: list[str], data: bytes
) -> None:
    """A complete-looking backup whose manifest names files outside its directory."""
    client = s3_server.client()
    body = client.get_object(Bucket=bucket, Key=f"pfx/{good_id}/manifest.json")["Body"].read()
    manifest: dict[str, Any] = json.loads(body)
    digest = hashlib.sha256(data).hexdigest()
    manifest["id"] = EVIL_ID
    manifest["files"] = [{"path": name, "size": len(data), "sha256": digest} for name in names]
    manifest["total_size"] = len(data) * len(names)
    client.put_object(
        Bucket=bucket, Key=f"pfx/{EVIL_ID}/manifest.json", Body=json.dumps(manifest).encode()
    )
