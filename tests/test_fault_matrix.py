"""The fault matrix (issue 24, item 1): each command × each fault × encryption on/off.

Faults are real (tests/support/faults.py): ENOSPC from a small tmpfs, EIO from a loop device
cut short under its ext4 filesystem, EPIPE from a stdout whose reader is gone, SIGINT and
SIGTERM sent to the process while its pg_dump / pg_restore is held with SIGSTOP.

The contract, whatever the options: a fault of the host is `error: …` on stderr with exit 2
and one JSON document (`ok: false`, the cause in `error`); a signal is exit 130 ("interrupted;
cleaned up", JSON `{"ok": false, "error": "interrupted"}`); never a traceback; the partial
result (backup directory, S3 objects, staging copy, decrypted archive, a database created
with --create) is removed and earlier backups are untouched. A closed stdout only loses the
output (tests/support/../cli/_streams.py): the command still does its work and exits with
its own status.

Which combinations are not run, and why: a backup to S3 under EIO — an upload-only backup
reads its staging files back from the page cache and never fsyncs them, so a failing
medium under the staging directory cannot surface; the S3 side's own faults (no answer,
refused, missing bucket) are tests/test_storage_independence.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pyrage
import pytest

from tests.support.backup import kill_if_alive, wait_for_dump, wait_gone
from tests.support.cli import clean_env, sbtc_ops_executable
from tests.support.faults import (
    FaultyDisk,
    Tmpfs,
    bind_file,
    closed_pipe,
    working_descendant,
)
from tests.support.pg import SourceServer, assert_no_postgres_left
from tests.support.s3 import S3Server
from tests.support.verify import FAST_CHAIN_ENV, copy_schema_references, private_tmpdir

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

FAULTS = ["ENOSPC", "EIO", "EPIPE", "SIGINT", "SIGTERM"]
ERRNO_TEXT = {"ENOSPC": "No space left on device", "EIO": "Input/output error"}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
ENCRYPTION = [pytest.param(False, id="plain"), pytest.param(True, id="age")]


@dataclass(frozen=True)
class AgeKeys:
    recipient: str
    identity_file: Path


@pytest.fixture(scope="module")
def age_keys(tmp_path_factory: pytest.TempPathFactory) -> AgeKeys:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "identity.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return AgeKeys(str(identity.to_public()), path)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"not one JSON document: {self.stdout!r} / {self.stderr}") from exc
        return doc


def sbtc_ops(
    *args: str, state: Path, env: dict[str, str] | None = None, stdout: int | None = None
) -> Run:
    proc = subprocess.run(
        [sbtc_ops_executable(), *args],
        cwd=state.parent,
        env=clean_env(state, env),
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=240,
        check=False,
    )
    return Run(proc.returncode, proc.stdout or "", proc.stderr)


def interrupt(
    *args: str, state: Path, env: dict[str, str], signum: int, held: Callable[[Any], int]
) -> Run:
    """Start `sbtc-ops ARGS`, hold the worker `held(proc)` finds with SIGSTOP, send `signum`
    to sbtc-ops, and check the worker does not outlive it."""
    proc = subprocess.Popen(
        [sbtc_ops_executable(), *args],
        cwd=state.parent,
        env=clean_env(state, {**env, "PYTHONFAULTHANDLER": "1"}),  # see the timeout below
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = None
    try:
        worker = held(proc)
        os.kill(worker, signal.SIGSTOP)
        proc.send_signal(signum)
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # Where it is stuck: the kernel's view, then Python's (faulthandler on SIGABRT).
            snap = snapshot(proc.pid)
            os.kill(proc.pid, signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"still running after the signal: {snap}\n{err}") from None
        assert wait_gone(worker), f"the worker {worker} outlived the interrupted run"
    finally:
        if worker is not None:
            kill_if_alive(worker)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Run(proc.returncode, stdout, stderr)


def snapshot(pid: int) -> str:
    """What a run that did not stop is doing: its threads' kernel waits and its children."""
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            lines.append(f"thread {task.name}: {(task / 'wchan').read_text()}")
        except OSError:
            continue
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                lines.append(f"child {child.name}: {stat[:80]}")
        except (OSError, ValueError):
            continue
    return "; ".join(lines)


def wait_for_restore(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (pid := working_descendant(proc.pid, "pg_restore")) is None:
        assert proc.poll() is None, f"ended before its pg_restore: {proc.communicate()}"
        assert time.monotonic() < deadline, "no pg_restore started"
        time.sleep(0.002)
    return pid


def assert_failed_cleanly(run: Run, fault: str) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    if fault in SIGNALS:
        assert run.code == 130, run.stderr
        assert run.doc == {"ok": False, "error": "interrupted"}
        assert "interrupted; cleaned up" in run.stderr
        return
    assert run.code == 2, (run.stdout, run.stderr)
    assert run.doc["ok"] is False
    # ext4 reports a failing directory block as ENOMEM, a failing data block as EIO; where
    # it puts the new backup's directory is the allocator's choice (module doc).
    texts = [ERRNO_TEXT[fault]] + (["Cannot allocate memory"] if fault == "EIO" else [])
    assert any(text in run.doc["error"] for text in texts), run.doc
    stderr = " ".join(run.stderr.split())
    assert "error:" in stderr and any(text in stderr for text in texts), run.stderr


# -- backup ------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the backups of one case go, and what is there to compare afterwards."""

    location: str
    state: Path
    contents: Callable[[], dict[str, bytes]]  # every file/object of the location


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    undo: list[Callable[[], None]] = []
    yield undo
    for step in reversed(undo):
        step()


def local_contents(root: Path) -> Callable[[], dict[str, bytes]]:
    def read() -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    return read


def backup_target(
    variant: str, fault: str, tmp_path: Path, cleanup: list[Callable[[], None]], s3: Any
) -> tuple[Target, FaultyDisk | None]:
    state = tmp_path / "work" / "state"
    state.parent.mkdir(parents=True, exist_ok=True)
    disk = None
    if variant == "s3":
        if fault == "EIO":
            pytest.skip("an upload-only backup never fsyncs its staging files (module doc)")
        if fault == "ENOSPC":
            small = Tmpfs("12m")
            cleanup.append(small.close)
            state = small.path / "state"
        server: S3Server = s3()
        bucket = server.create_bucket("faults")
        return (
            Target(
                f"s3://{bucket}/signer",
                state,
                lambda: {key: b"" for key in server.keys(bucket)},
            ),
            None,
        )
    repo_parent = tmp_path
    if fault == "ENOSPC":
        small = Tmpfs("12m")
        cleanup.append(small.close)
        repo_parent = small.path
    elif fault == "EIO":
        disk = FaultyDisk()
        cleanup.append(disk.close)
        repo_parent = disk.path
    repo = repo_parent / "repo"
    return Target(str(repo), state, local_contents(repo)), disk


@pytest.fixture
def s3_lazy(request: pytest.FixtureRequest) -> Callable[[], S3Server]:
    """The session's weed server, started only by the cases that use S3."""
    return lambda: request.getfixturevalue("s3_server")


@pytest.mark.parametrize("encrypted", ENCRYPTION)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("variant", ["custom", "directory", "s3"])
def test_backup(
    variant: str,
    fault: str,
    encrypted: bool,
    tmp_path: Path,
    cleanup: list[Callable[[], None]],
    s3_lazy: Callable[[], S3Server],
    small_db: tuple[str, GeneratedDb],
    medium_db: tuple[str, GeneratedDb],
    age_keys: AgeKeys,
) -> None:
    target, disk = backup_target(variant, fault, tmp_path, cleanup, s3_lazy)
    env = s3_lazy().env() if variant == "s3" else {}
    options = ["--to", target.location, "--json"]
    options += ["--format", "directory"] if variant == "directory" else []
    options += ["--recipient", age_keys.recipient] if encrypted else []

    earlier = sbtc_ops("backup", "--db", small_db[0], *options, state=target.state, env=env)
    assert earlier.code == 0, earlier.stderr
    before = target.contents()

    if fault == "EPIPE":
        run = sbtc_ops(
            "backup", "--db", small_db[0], *options, state=target.state, env=env,
            stdout=closed_pipe(),
        )  # fmt: skip
        assert run.code == 0 and "Traceback" not in run.stderr, run.stderr
        listed = sbtc_ops(
            "backups", "--repo", target.location, "--json", state=target.state, env=env
        )
        states = [row["state"] for row in listed.doc["backups"]]
        assert states == ["complete", "complete"], listed.stdout
        return
    big = {**env, "SBTC_OPS_BACKUP__COMPRESSION": "none"}  # 24 MiB: more than the space
    if fault in SIGNALS:
        run = interrupt(
            "backup", "--db", medium_db[0], *options, state=target.state, env=big,
            signum=SIGNALS[fault], held=wait_for_dump,
        )  # fmt: skip
    else:
        if disk is not None:
            disk.fail_beyond(disk.used_bytes() + (2 << 20))  # past the new directories
        run = sbtc_ops("backup", "--db", medium_db[0], *options, state=target.state, env=big)
    assert_failed_cleanly(run, fault)
    assert target.contents() == before  # nothing partial left, the earlier backup intact
    staging = target.state / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


# -- restore and verify --------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    repo: Path
    backup_id: str
    state: Path  # the state the backup was taken with: it holds the schema reference


@pytest.fixture(scope="module")
def archives(
    tmp_path_factory: pytest.TempPathFactory,
    small_db: tuple[str, GeneratedDb],
    medium_db: tuple[str, GeneratedDb],
    age_keys: AgeKeys,
) -> dict[tuple[str, bool], Archive]:
    """Uncompressed backups (small, and medium for the signal cases), plain and encrypted."""
    root = tmp_path_factory.mktemp("fault-archives")
    found = {}
    for size, (url, _) in (("small", small_db), ("medium", medium_db)):
        for encrypted in (False, True):
            repo = root / f"{size}-{encrypted}"
            extra = ["--recipient", age_keys.recipient] if encrypted else []
            run = sbtc_ops(
                "backup", "--db", url, "--to", str(repo), "--json", *extra,
                state=root / "state", env={"SBTC_OPS_BACKUP__COMPRESSION": "none"},
            )  # fmt: skip
            assert run.code == 0, run.stderr
            found[(size, encrypted)] = Archive(repo, run.doc["backup"]["id"], root / "state")
    return found


@dataclass
class ReadCase:
    """One restore/verify case: its archive's location, TMPDIR, and the state."""

    archive: Archive
    tmpdir: Path
    state: Path
    env: dict[str, str]


def read_case(
    fault: str,
    encrypted: bool,
    archives: dict[tuple[str, bool], Archive],
    tmp_path: Path,
    cleanup: list[Callable[[], None]],
) -> ReadCase:
    archive = archives[("medium" if fault in SIGNALS else "small", encrypted)]
    if fault == "ENOSPC":
        small = Tmpfs("1m")  # smaller than the archive: the staging copy cannot fit
        cleanup.append(small.close)
        tmpdir = small.path
    else:
        tmpdir = private_tmpdir("sf-run-")
        cleanup.append(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    if fault == "EIO":
        disk = FaultyDisk()
        cleanup.append(disk.close)
        # A healthy copy of the repository whose archive file is the faulty disk's.
        repo = tmp_path / "eio-repo"
        shutil.copytree(archive.repo, repo)
        disk = FaultyDisk()
        cleanup.append(disk.close)
        cut = disk.used_bytes()  # the archive's data all lands past the metadata
        archive_files = [
            p
            for p in (repo / archive.backup_id).iterdir()
            if p.is_file() and p.name != "manifest.json"  # not attestations/ of earlier drills
        ]
        for path in archive_files:
            shutil.copy(path, disk.path / path.name)
        disk.sync()
        disk.fail_beyond(cut)
        for path in archive_files:
            disk.evict(disk.path / path.name)
            cleanup.append(bind_file(disk.path / path.name, path))
        archive = Archive(repo, archive.backup_id, archive.state)
    # A fresh state per case that knows the schema the backup recorded (else: unknown-schema).
    state = tmp_path / "state"
    copy_schema_references(archive.state, state)
    # The drill's own free-space reserve would stop it before the filesystem fills: the
    # matrix wants the filesystem's ENOSPC itself (the budget has its own tests).
    env = {"SBTC_OPS_VERIFY__DISK_RESERVE_MB": "0"} if fault == "ENOSPC" else {}
    return ReadCase(archive, tmpdir, state, env)


def read_env(case: ReadCase) -> dict[str, str]:
    return {"TMPDIR": str(case.tmpdir), **FAST_CHAIN_ENV, **case.env}


def assert_nothing_left(case: ReadCase) -> None:
    assert_no_postgres_left(case.tmpdir)
    assert sorted(p.name for p in case.tmpdir.iterdir()) == []  # staging, clusters


@pytest.mark.parametrize("encrypted", ENCRYPTION)
@pytest.mark.parametrize("fault", FAULTS)
def test_restore(
    fault: str,
    encrypted: bool,
    tmp_path: Path,
    cleanup: list[Callable[[], None]],
    archives: dict[tuple[str, bool], Archive],
    backup_server: SourceServer,
    age_keys: AgeKeys,
) -> None:
    case = read_case(fault, encrypted, archives, tmp_path, cleanup)
    name = f"fault_{fault.lower()}_{'age' if encrypted else 'plain'}_{secrets.token_hex(3)}"
    target = backup_server.create_signer_database(name)
    args = [
        "restore", case.archive.backup_id, "--repo", str(case.archive.repo),
        "--target-db", target, "--json",
        *(["--identity", str(age_keys.identity_file)] if encrypted else []),
    ]  # fmt: skip
    if fault == "EPIPE":
        # The same restore's exit code with a reader: a closed stdout must not change it.
        other = backup_server.create_signer_database(f"{name}_reader")
        seen = sbtc_ops(*[other if a == target else a for a in args], state=case.state,
                        env=read_env(case))  # fmt: skip
        run = sbtc_ops(*args, state=case.state, env=read_env(case), stdout=closed_pipe())
        assert seen.code == 0, seen.stdout + seen.stderr  # the clean restore, with a reader
        assert run.code == seen.code and "Traceback" not in run.stderr, run.stderr
        assert restored_schema(target) == restored_schema(other)
    else:
        if fault in SIGNALS:
            run = interrupt(
                *args, state=case.state, env=read_env(case), signum=SIGNALS[fault],
                held=wait_for_restore,
            )  # fmt: skip
        else:
            run = sbtc_ops(*args, state=case.state, env=read_env(case))
        assert_failed_cleanly(run, fault)
        assert not restored_schema(target)  # one transaction, rolled back (or never begun)
    assert_nothing_left(case)


def restored_schema(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'sbtc_signer'").fetchone()
    return row is not None


@pytest.mark.parametrize("encrypted", ENCRYPTION)
@pytest.mark.parametrize("fault", FAULTS)
def test_verify(
    fault: str,
    encrypted: bool,
    tmp_path: Path,
    cleanup: list[Callable[[], None]],
    archives: dict[tuple[str, bool], Archive],
    small_db: tuple[str, GeneratedDb],
    medium_db: tuple[str, GeneratedDb],
    age_keys: AgeKeys,
) -> None:
    case = read_case(fault, encrypted, archives, tmp_path, cleanup)
    facts = (medium_db if fault in SIGNALS else small_db)[1]
    key = facts.newest_verified_key.hex()
    args = [
        "verify", case.archive.backup_id, "--repo", str(case.archive.repo),
        "--expected-key", key, "--json",
        *(["--identity", str(age_keys.identity_file)] if encrypted else []),
    ]  # fmt: skip
    if fault == "EPIPE":
        # A closed stdout must not change the verdict's exit code (seen with a reader).
        seen = sbtc_ops(*args, state=case.state, env=read_env(case))
        run = sbtc_ops(*args, state=case.state, env=read_env(case), stdout=closed_pipe())
        assert run.code == seen.code and "Traceback" not in run.stderr, run.stderr
        assert seen.code == 0, seen.stdout  # the clean backup's verdict: match
    elif fault in SIGNALS:
        run = interrupt(
            *args, state=case.state, env=read_env(case), signum=SIGNALS[fault],
            held=wait_for_restore,
        )  # fmt: skip
        assert_failed_cleanly(run, fault)
    else:
        run = sbtc_ops(*args, state=case.state, env=read_env(case))
        assert_failed_cleanly(run, fault)
    assert_nothing_left(case)
