"""`sbtc-ops verify` on clean backups: every format passes (no false positives), the page's
manual procedure agrees with what verify reports, --expected-key mode, and the outcome is
recorded for `sbtc-ops backups`.

One generated signer database, its backups and dumps are made once for the module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from sbtc_ops.devtools.signer_db import GeneratedDb
from sbtc_ops.pg import find_binaries
from sbtc_ops.pg.runas import resolve_run_as
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import clean_env, run_cli, sbtc_ops_executable
from tests.support.pg import (
    SourceServer,
    assert_no_postgres_left,
    new_signer_database,
)
from tests.support.verify import (
    PAGE_QUERY,
    Verifier,
    VerifyArea,
    VerifyRun,
    gzip_file,
    operator_dump,
    private_tmpdir,
    random_public_key,
    stacks_node_for,
    take_backup,
    write_key_file,
    zstd_file,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

DBNAME = "verify_formats"


@dataclass
class Area(VerifyArea):
    """Everything the module's cases share."""

    custom_id: str
    directory_id: str
    encrypted_id: str
    dkg_only_id: str
    identity_file: Path
    key_file: Path
    dumps: dict[str, Path]


@pytest.fixture(scope="module")
def area(
    source_server: SourceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Area]:
    root = tmp_path_factory.mktemp("verify-formats")
    url, facts = new_signer_database(source_server, target_mb=3.0, seed=41, dbname=DBNAME)
    repo, state = root / "repo", root / "backup-state"
    custom_id, _ = take_backup(url, repo, state)
    directory_id, _ = take_backup(url, repo, state, "--format", "directory")
    identity = pyrage.x25519.Identity.generate()
    identity_file = root / "identity.txt"
    write_secret(identity_file, str(identity))
    encrypted_id, _ = take_backup(url, repo, state, "--recipient", str(identity.to_public()))
    dkg_only_id, _ = take_backup(url, repo, state, "--dkg-only")
    dumps_dir = root / "dumps"
    dumps_dir.mkdir()
    plain = operator_dump(source_server, DBNAME, dumps_dir / "signer.sql")
    dumps = {
        "plain": plain,
        "plain.gz": gzip_file(plain, dumps_dir / "signer.sql.gz"),
        "plain.zst": zstd_file(plain, dumps_dir / "signer.sql.zst"),
        "custom": operator_dump(source_server, DBNAME, dumps_dir / "signer.dump", "-Fc"),
        "tar": operator_dump(source_server, DBNAME, dumps_dir / "signer.tar", "-Ft"),
        "directory": operator_dump(source_server, DBNAME, dumps_dir / "signer.dir", "-Fd"),
    }
    key_file = write_key_file(root / "signer.key", facts.signer_private_key)
    with stacks_node_for(facts) as node:
        yield Area(
            root=root,
            facts=facts,
            node=node,
            repo=repo,
            state=state,
            verify=Verifier(root / "work", reference_from=state),
            custom_id=custom_id,
            directory_id=directory_id,
            encrypted_id=encrypted_id,
            dkg_only_id=dkg_only_id,
            identity_file=identity_file,
            key_file=key_file,
            dumps=dumps,
        )


def write_secret(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")


def assert_clean_match(run: VerifyRun, facts: GeneratedDb) -> None:
    run.expect(code=0, verdict="match")
    doc = run.doc
    assert doc["db_aggregate_key"] == facts.newest_verified_key.hex()
    assert doc["onchain_aggregate_key"] == facts.newest_verified_key.hex()
    for must_pass in (
        "restore.complete",
        "restore.amcheck",
        "schema.present",
        "migrations.present",
        "dkg.verified_key_present",
        "chain.endpoints_agree",
        "dkg.matches_chain",
        "dkg.signer_set_matches_chain",
    ):
        assert run.check(must_pass)["status"] == "pass", run.check(must_pass)
    assert facts.migrations[-1] in run.check("migrations.present")["detail"]
    assert all(c["remediation"] is None for c in doc["checks"] if c["status"] == "pass")
    assert {"restore", "checks", "amcheck", "total"} <= set(doc["timings"])


# -- sbtc-ops' own backups -----------------------------------------------------------------


def test_sbtc_ops_custom_backup_by_id_passes_every_check(area: Area) -> None:
    run = area.verify(
        area.custom_id,
        "--repo",
        str(area.repo),
        "--stacks-url",
        area.node.url,
        "--signer-key-file",
        str(area.key_file),
    )
    assert_clean_match(run, area.facts)
    # With a manifest and a key file nothing is skipped.
    assert {c["status"] for c in run.doc["checks"]} == {"pass"}
    assert run.doc["backup"] == area.custom_id
    assert run.doc["archive"]["format"] == "custom"
    # The private key never appears anywhere.
    secret = area.facts.signer_private_key.hex()
    assert secret not in run.result.stdout and secret not in run.result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="clusters run as another user only under root")
def test_which_user_runs_the_clusters_is_said_once(area: Area) -> None:
    state = area.verify.fresh_state()
    args = (area.custom_id, "--repo", str(area.repo), "--expected-key")
    key = area.facts.newest_verified_key.hex()
    first = area.verify(*args, key, state_dir=state)
    second = area.verify(*args, key, state_dir=state)
    user = resolve_run_as(None).name
    assert f"run as the unprivileged user {user!r}" in first.result.stderr
    assert "shown once" in first.result.stderr
    assert "unprivileged user" not in second.result.stderr
    assert first.doc["verdict"] == second.doc["verdict"] == "match"


def test_archive_file_inside_a_backup_uses_its_manifest(area: Area, tmp_path: Path) -> None:
    """Pointing at repo/<id>/signer.dump still checks it against <id>/manifest.json."""
    run = area.verify(
        str(area.repo / area.custom_id / "signer.dump"), "--stacks-url", area.node.url
    )
    assert_clean_match(run, area.facts)
    assert run.check("archive.checksum")["status"] == "pass"
    assert run.check("rows.match_manifest")["status"] == "pass"
    # A copy with one byte flipped, next to a copy of the manifest, is caught before restore.
    copy = tmp_path / area.custom_id
    shutil.copytree(area.repo / area.custom_id, copy)
    dump = copy / "signer.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    corrupt = area.verify(str(dump), "--stacks-url", area.node.url)
    corrupt.expect(code=1, verdict="corrupt", failing="archive.checksum")


@pytest.mark.parametrize(
    ("which", "fmt", "step"),
    [("directory", "directory", None), ("encrypted", "custom", "decrypted (age)")],
)
def test_sbtc_ops_directory_and_encrypted_backups_pass(
    area: Area, which: str, fmt: str, step: str | None
) -> None:
    backup_id = area.directory_id if which == "directory" else area.encrypted_id
    run = area.verify(
        str(area.repo / backup_id),
        "--identity",
        str(area.identity_file),
        "--stacks-url",
        area.node.url,
    )
    assert_clean_match(run, area.facts)
    assert run.check("archive.checksum")["status"] == "pass"
    assert run.check("rows.match_manifest")["status"] == "pass"
    assert run.doc["archive"]["format"] == fmt
    assert run.doc["archive"]["steps"] == ([step] if step else [])


def test_dkg_only_export_passes_and_is_picked_by_latest_only_when_asked(area: Area) -> None:
    run = area.verify(
        "--latest", "--kind", "dkg-only", "--repo", str(area.repo), "--stacks-url", area.node.url
    )
    assert_clean_match(run, area.facts)
    assert run.doc["backup"] == area.dkg_only_id  # the newest backup of all is this export
    rows = run.check("rows.match_manifest")
    assert rows["status"] == "pass" and "DKG-only export" in rows["detail"]


def test_latest_is_the_newest_full_backup_not_a_dkg_export(area: Area) -> None:
    run = area.verify(
        "--latest", "--repo", str(area.repo), "--identity", str(area.identity_file),
        "--stacks-url", area.node.url,
    )  # fmt: skip
    assert_clean_match(run, area.facts)
    assert run.doc["backup"] == area.encrypted_id != area.dkg_only_id
    listed = run_cli("backups", "--repo", str(area.repo), cwd=area.root, env=clean_env(area.state))
    assert listed.code == 0, listed.stderr
    kinds = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert kinds[area.dkg_only_id] == "dkg-only" and kinds[area.encrypted_id] == "full"
    assert listed.stdout.splitlines()[0].split()[:2] == ["id", "kind"]
    misused = area.verify(area.custom_id, "--kind", "dkg-only", "--repo", str(area.repo))
    assert misused.code == 2 and "--kind" in misused.doc["error"]


def test_encrypted_backup_without_identity_is_a_usage_problem(area: Area) -> None:
    run = area.verify(area.encrypted_id, "--repo", str(area.repo), "--stacks-url", area.node.url)
    assert run.code == 2
    assert "identity" in run.result.stderr
    assert run.doc["ok"] is False


def test_encrypted_backup_with_the_wrong_identity_is_a_usage_problem(area: Area) -> None:
    wrong = area.root / "wrong-identity.txt"
    write_secret(wrong, str(pyrage.x25519.Identity.generate()))
    run = area.verify(
        area.encrypted_id,
        "--repo",
        str(area.repo),
        "--identity",
        str(wrong),
        "--expected-key",
        area.facts.newest_verified_key.hex(),
    )
    assert run.code == 2
    assert "cannot decrypt the backup" in run.doc["error"]
    assert "AGE-SECRET-KEY" not in run.result.stdout + run.result.stderr


# -- dumps an operator already has ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "steps"),
    [
        ("plain", "plain", []),
        ("plain.gz", "plain", ["decompressed (gzip)"]),
        ("plain.zst", "plain", ["decompressed (zstd)"]),
        ("custom", "custom", []),
        ("tar", "tar", []),
        ("directory", "directory", []),
    ],
)
def test_operator_pg_dump_outputs_pass(area: Area, name: str, fmt: str, steps: list[str]) -> None:
    run = area.verify(str(area.dumps[name]), "--stacks-url", area.node.url)
    assert_clean_match(run, area.facts)
    assert run.doc["archive"] == {"format": fmt, "steps": steps}
    # No manifest beside an operator's dump: nothing to compare, said so, not failed.
    assert run.check("archive.checksum")["status"] == "skip"
    assert run.check("rows.match_manifest")["status"] == "skip"


# -- the page's manual procedure, reproduced ------------------------------------------------------


def test_manual_procedure_on_kept_cluster_agrees_with_verify(area: Area) -> None:
    tmpdir = private_tmpdir()
    pid = None
    try:
        env = area.verify.env(area.verify.fresh_state(), tmpdir, None)
        result = run_cli(
            "verify",
            area.custom_id,
            "--repo",
            str(area.repo),
            "--stacks-url",
            area.node.url,
            "--keep-cluster",
            "--json",
            cwd=area.verify.workdir,
            env=env,
        )
        assert result.code == 0, result.stderr
        kept = re.search(r"kept running \(pid (\d+)\)", result.stderr)
        connect = re.search(r"connect: psql (.+)", result.stderr)
        restored = re.search(r"the restored backup is the database '(\w+)'", result.stderr)
        assert kept and connect and restored, result.stderr
        pid = int(kept.group(1))
        (conninfo,) = shlex.split(connect.group(1))
        database = f"{conninfo} dbname={restored.group(1)}"
        # The operator's step, exactly as the page writes it, on the restored copy.
        page = kept_psql(database, PAGE_QUERY)
        assert page.returncode == 0, page.stderr
        first_row = page.stdout.splitlines()[0].strip()
        # psql prints bytea as \x…; the operator strips the prefix by eye.
        assert first_row == "\\x" + result.json()["db_aggregate_key"]
        assert result.json()["db_aggregate_key"] == area.facts.newest_verified_key.hex()
        # The drill's cluster (its setup, pg/template.py): the restored database, owned by the
        # restore role, and `postgres`; no template0/template1, amcheck in our schema.
        shape = kept_psql(
            database,
            "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname)"
            " FROM pg_database",
            "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'amcheck'",
        )
        assert shape.returncode == 0, shape.stderr
        assert shape.stdout.split() == [
            f"postgres:sbtc_ops_admin,{restored.group(1)}:sbtc_ops_restore",
            "sbtc_ops_amcheck",
        ]
    finally:
        if pid is not None:
            stop_postmaster(pid)
        assert_no_postgres_left(tmpdir)
        subprocess.run(["rm", "-rf", str(tmpdir)], check=False)


def kept_psql(database: str, *queries: str) -> subprocess.CompletedProcess[str]:
    """psql as the operator runs it on a kept cluster: unaligned, tuples only."""
    commands = [arg for query in queries for arg in ("-c", query)]
    return subprocess.run(
        [str(find_binaries(tool_hint="psql").psql), "-X", "-A", "-t", "--no-password",
         "-d", database, *commands],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def stop_postmaster(pid: int, timeout_s: float = 20.0) -> None:
    """Fast shutdown of the kept cluster's postmaster (SIGINT), then wait for it to go."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def test_later_drills_start_from_the_set_up_template(area: Area) -> None:
    """The first drill on a state runs initdb and the drill's setup and keeps the result as
    its cluster template; the next one copies it (no setup) and reaches the same verdict."""
    state = area.verify.fresh_state()
    args = (area.custom_id, "--repo", str(area.repo), "--expected-key")
    key = area.facts.newest_verified_key.hex()
    first = area.verify(*args, key, state_dir=state)
    second = area.verify(*args, key, state_dir=state)
    assert first.doc["verdict"] == second.doc["verdict"] == "match"
    assert "cluster.setup" in first.doc["timings"]
    if first.doc["sandbox"]["mount_view"]:  # templates need a sandbox with its own view
        assert "cluster.setup" not in second.doc["timings"]
        assert [p for p in (state / "cluster-templates").iterdir() if p.is_dir()]
    assert second.check("restore.amcheck")["status"] == "pass"


# -- --expected-key, no chain ---------------------------------------------------------------------


def test_expected_key_mode_reads_no_chain(area: Area) -> None:
    before = len(area.node.requests)
    run = area.verify(
        area.custom_id,
        "--repo",
        str(area.repo),
        "--expected-key",
        "0x" + area.facts.newest_verified_key.hex().upper(),
    )
    run.expect(code=0, verdict="match")
    assert run.check("chain.endpoints_agree")["status"] == "skip"
    assert run.check("dkg.signer_set_matches_chain")["status"] == "skip"
    # A key given by hand is labelled as such and never taken for a chain reading.
    assert run.doc["key_source"] == "expected (given by hand)"
    assert run.doc["onchain_aggregate_key"] is None
    assert run.doc["expected_aggregate_key"] == area.facts.newest_verified_key.hex()
    assert len(area.node.requests) == before


def test_expected_key_that_differs_is_a_mismatch(area: Area) -> None:
    other = random_public_key()
    run = area.verify(area.custom_id, "--repo", str(area.repo), "--expected-key", other.hex())
    check = run.expect(code=1, verdict="mismatch", failing="dkg.matches_chain")
    assert other.hex() in check["detail"] and "given by hand" in check["detail"]


@pytest.mark.parametrize("bad", ["zz", "02" + "00" * 31, "04" + "11" * 32])
def test_malformed_expected_key_is_a_usage_error(area: Area, bad: str) -> None:
    run = area.verify(area.custom_id, "--repo", str(area.repo), "--expected-key", bad)
    assert run.code == 2
    assert "--expected-key" in run.result.stderr
    assert run.doc == {"ok": False, "error": run.doc["error"]}


# -- the terminal report and the recorded outcome ---------------------------------------------------


def test_terminal_report_is_a_checklist_with_timings(area: Area) -> None:
    run = area.verify(
        area.custom_id, "--repo", str(area.repo), "--stacks-url", area.node.url, json_output=False
    )
    assert run.code == 0, run.result.stderr
    lines = run.result.stdout.splitlines()
    assert lines[0] == f"verify {area.custom_id}"
    assert any(re.match(r"✓ pass +restore\.complete ", line.strip()) for line in lines)
    assert any(re.match(r"- skip +dkg\.shares_decrypt ", line.strip()) for line in lines)
    assert "verdict: match" in run.result.stdout
    assert re.search(r"timings: .*restore \d+\.\ds", run.result.stdout)


def test_progress_on_a_terminal_names_the_phases(area: Area) -> None:
    """On a terminal (a pty as stderr) the progress display names the phases; with --json it
    draws nothing and the report goes to stdout alone."""
    for json_mode in (False, True):
        terminal, stdout, code = _verify_on_a_pty(area, json_mode)
        assert code == 0, terminal
        if json_mode:
            assert json.loads(stdout)["verdict"] == "match"
            assert "restore" not in terminal and "amcheck" not in terminal
        else:
            assert "verdict" in stdout and "match" in stdout
            assert "restore" in terminal and "amcheck" in terminal, terminal


def _verify_on_a_pty(area: Area, json_mode: bool) -> tuple[str, str, int]:
    tmpdir = private_tmpdir()
    primary, secondary = os.openpty()
    try:
        env = area.verify.env(area.verify.fresh_state(), tmpdir, {"TERM": "xterm"})
        proc = subprocess.Popen(
            [sbtc_ops_executable(), "verify", area.custom_id, "--repo", str(area.repo),
             "--stacks-url", area.node.url, *(["--json"] if json_mode else [])],
            cwd=area.verify.workdir, env=env, stdout=subprocess.PIPE, stderr=secondary,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        os.close(secondary)
        terminal = read_until_closed(primary)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        assert_no_postgres_left(tmpdir)
        shutil.rmtree(tmpdir, ignore_errors=True)
    return terminal, stdout, proc.returncode


def read_until_closed(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the pty
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_outcome_is_recorded_for_backups_listing(area: Area) -> None:
    state = area.verify.fresh_state()  # with the backup's schema reference
    # A failing verification first (a chain that holds another key), then a passing one: the
    # newest outcome is shown. (A key typed with --expected-key never fails a backup.)
    with FakeStacksNode(deployer=area.facts.deployer) as elsewhere:
        elsewhere.set_aggregate_key(random_public_key())
        failed = area.verify(
            area.directory_id, "--repo", str(area.repo), "--stacks-url", elsewhere.url,
            state_dir=state,
        )  # fmt: skip
    assert failed.code == 1 and failed.doc["verdict"] == "mismatch"
    ok = area.verify(
        area.custom_id, "--repo", str(area.repo), "--stacks-url", area.node.url, state_dir=state
    )
    assert ok.code == 0
    listing = run_cli(
        "backups", "--repo", str(area.repo), "--json", cwd=area.root, env=clean_env(state)
    )
    assert listing.code == 0, listing.stderr
    states = {row["id"]: row["state"] for row in listing.json()["backups"]}
    assert states[area.custom_id] == "verified-ok"
    assert states[area.directory_id] == "verified-failed"
    assert states[area.encrypted_id] == "complete"
