"""Signed drill attestations: every `verify` leaves an in-toto statement beside its backup,
signed with an SSH key; OpenSSH's own `ssh-keygen -Y verify` and `sbtc-ops attest verify`
accept it; a flipped byte in the archive, the statement or the signature is refused; a second
administrator's co-signature counts; local and S3 copies agree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.attest import sshsig
from sbtc_ops.attest.statement import PREDICATE_TYPE, STATEMENT_TYPE
from sbtc_ops.devtools.signer_db import GeneratedDb
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.browser import dump_dom, needs_chromium
from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.pg import SourceServer, new_signer_database
from tests.support.verify import Verifier, stacks_node_for, take_backup

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen"),
]


def make_key(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def allowed_signers(path: Path, *keys: tuple[str, Path]) -> Path:
    lines = []
    for principal, key in keys:
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        lines.append(f'{principal} namespaces="{sshsig.NAMESPACE}" {kind} {blob}')
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Area:
    root: Path
    db_url: str
    facts: GeneratedDb
    node: FakeStacksNode
    repo: Path
    state: Path
    backup_id: str
    serve_key: Path
    admin_key: Path
    stranger_key: Path
    allowed: Path
    verify: Verifier

    def cli(self, *args: str, extra: dict[str, str] | None = None) -> CliResult:
        env = clean_env(self.state, extra)
        return run_cli(*args, cwd=self.root, env=env)

    def attestation_dir(self) -> Path:
        return self.repo / self.backup_id / "attestations"

    def statements(self) -> list[Path]:
        return sorted(self.attestation_dir().glob("*.intoto.json"))


@pytest.fixture(scope="module")
def area(source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Area]:
    root = tmp_path_factory.mktemp("attest")
    url, facts = new_signer_database(source_server, target_mb=2.0, seed=23, dbname="attest")
    repo, state = root / "repo", root / "state"
    backup_id, _ = take_backup(url, repo, state)
    keys = root / "keys"
    keys.mkdir()
    serve_key = make_key(keys, "serve")
    admin_key = make_key(keys, "alice")
    stranger_key = make_key(keys, "mallory")
    allowed = allowed_signers(
        root / "allowed_signers", ("sbtc-ops@host", serve_key), ("alice", admin_key)
    )
    with stacks_node_for(facts) as node:
        yield Area(
            root,
            url,
            facts,
            node,
            repo,
            state,
            backup_id,
            serve_key,
            admin_key,
            stranger_key,
            allowed,
            Verifier(root / "verify"),
        )


def drill(area: Area, *, key: Path | None) -> dict[str, Any]:
    env = {"SBTC_OPS_ATTEST__SIGNING_KEY": str(key)} if key else {}
    run = area.verify(
        area.backup_id,
        "--repo",
        str(area.repo),
        "--stacks-url",
        area.node.url,
        state_dir=area.state,
        env=env,
    )
    run.expect(code=0, verdict="match")
    attestation = run.doc["attestation"]
    assert isinstance(attestation, dict)
    return attestation


def test_a_drill_leaves_a_signed_statement_that_openssh_verifies(area: Area) -> None:
    attestation = drill(area, key=area.serve_key)
    assert attestation["signed"] is True, attestation
    assert attestation["problems"] == []
    statement_file = area.attestation_dir() / attestation["name"]
    data = statement_file.read_bytes()
    statement = json.loads(data)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    predicate = statement["predicate"]
    assert predicate["verdict"] == "match"
    assert predicate["backup"]["id"] == area.backup_id
    assert len(predicate["backup"]["manifest_sha256"]) == 64
    assert predicate["chain"]["key"] == area.facts.newest_verified_key.hex()
    assert predicate["chain"]["tip"]["height"] is not None
    assert predicate["database"]["threshold"] is not None
    assert predicate["tool"]["lock_sha256"]
    assert predicate["sandbox"]["mode"]  # which isolation layers the drill had
    assert {c["id"] for c in predicate["checks"]} >= {"archive.checksum", "dkg.matches_chain"}
    manifest = json.loads((area.repo / area.backup_id / "manifest.json").read_text())
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        f["path"]: f["sha256"] for f in manifest["files"]
    }
    # OpenSSH alone, exactly as the README tells an auditor.
    done = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(area.allowed),
            "-I",
            "sbtc-ops@host",
            "-n",
            sshsig.NAMESPACE,
            "-s",
            f"{statement_file}.sig",
        ],
        input=data,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"Good" in done.stdout
    # And sbtc-ops' own check of the whole backup.
    result = area.cli(
        "attest",
        "verify",
        area.backup_id,
        "--repo",
        str(area.repo),
        "--allowed-signers",
        str(area.allowed),
        "--json",
    )
    assert result.code == 0, result.stdout + result.stderr
    doc = result.json()
    mine = next(s for s in doc["statements"] if s["name"] == attestation["name"])
    assert mine["signers"] == ["sbtc-ops@host"]
    assert mine["subjects_match"] is True
    assert mine["verdict"] == "match"


def test_unsigned_drill_says_so_and_attest_verify_refuses_it(area: Area, tmp_path: Path) -> None:
    attestation = drill(area, key=None)
    assert attestation["signed"] is False
    repo_copy = tmp_path / "repo"
    backup = repo_copy / area.backup_id
    shutil.copytree(
        area.repo / area.backup_id, backup, ignore=shutil.ignore_patterns("attestations")
    )
    (backup / "attestations").mkdir()
    shutil.copy2(area.attestation_dir() / attestation["name"], backup / "attestations")
    result = area.cli(
        "attest",
        "verify",
        area.backup_id,
        "--repo",
        str(repo_copy),
        "--allowed-signers",
        str(area.allowed),
        "--json",
    )
    assert result.code == 1
    assert result.json()["statements"][0]["signed"] is False


@pytest.mark.parametrize("flip", ["archive", "statement", "signature"])
def test_a_flipped_byte_is_refused(area: Area, tmp_path: Path, flip: str) -> None:
    attestation = drill(area, key=area.serve_key)
    repo_copy = tmp_path / "repo"
    shutil.copytree(area.repo, repo_copy)
    backup = repo_copy / area.backup_id
    statement_file = backup / "attestations" / attestation["name"]
    target = {
        "archive": next(p for p in backup.iterdir() if p.is_file() and p.name != "manifest.json"),
        "statement": statement_file,
        "signature": Path(f"{statement_file}.sig"),
    }[flip]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = area.cli(
        "attest", "verify", str(statement_file), "--allowed-signers", str(area.allowed), "--json"
    )
    assert result.code == 1, result.stdout + result.stderr
    statement = result.json()["statements"][0]
    assert statement["signed"] is False or statement["subjects_match"] is False


def test_a_second_administrator_cosigns_and_a_stranger_does_not_count(area: Area) -> None:
    attestation = drill(area, key=area.serve_key)
    statement_file = area.attestation_dir() / attestation["name"]
    result = area.cli("attest", "sign", str(statement_file), "--key", str(area.admin_key), "--json")
    assert result.code == 0, result.stderr
    result = area.cli(
        "attest", "verify", str(statement_file), "--allowed-signers", str(area.allowed), "--json"
    )
    assert result.code == 0, result.stdout
    assert result.json()["statements"][0]["signers"] == ["alice", "sbtc-ops@host"]
    # A signature by a key nobody allowed is reported, and makes the statement suspect.
    result = area.cli("attest", "sign", str(statement_file), "--key", str(area.stranger_key))
    assert result.code == 0, result.stderr
    result = area.cli(
        "attest", "verify", str(statement_file), "--allowed-signers", str(area.allowed), "--json"
    )
    assert result.code == 1
    signatures = result.json()["statements"][0]["signatures"]
    assert sorted(s["valid"] for s in signatures) == [False, True, True]


def test_attestations_are_never_overwritten(area: Area) -> None:
    before = {p.name: p.read_bytes() for p in area.attestation_dir().iterdir()}
    drill(area, key=area.serve_key)
    after = {p.name: p.read_bytes() for p in area.attestation_dir().iterdir()}
    assert {name: after[name] for name in before} == before
    assert len(after) > len(before)


def test_bad_input_to_attest_verify_is_a_clear_error(area: Area, tmp_path: Path) -> None:
    result = area.cli(
        "attest",
        "verify",
        area.backup_id,
        "--repo",
        str(area.repo),
        "--allowed-signers",
        str(tmp_path / "missing"),
        "--json",
    )
    assert result.code == 2
    assert "allowed-signers" in result.json()["error"]
    stray = tmp_path / "x.intoto.json"
    stray.write_text("{}")
    result = area.cli("attest", "verify", str(stray), "--allowed-signers", str(area.allowed))
    assert result.code == 2
    assert "Traceback" not in result.stderr


# -- the HTML report ---------------------------------------------------------------------------

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


@needs_chromium
def test_html_report_opens_in_chromium_with_hostile_text_escaped(
    area: Area, source_server: SourceServer, tmp_path: Path
) -> None:
    from tests.support.verify import operator_dump

    dump = operator_dump(source_server, "attest", tmp_path / "hostile.sql", "--format=plain")
    with dump.open("a") as handle:
        handle.write(f"DO $$ BEGIN RAISE EXCEPTION '%', $m${HOSTILE}$m$; END $$;\n")
    page = tmp_path / "report.html"
    run = area.verify(str(dump), "--stacks-url", area.node.url, "--html", str(page))
    assert run.code == 1
    assert page.stat().st_mode & 0o777 == 0o600
    text = page.read_text()
    assert HOSTILE not in text  # escaped, never raw markup
    dom = dump_dom(page.as_uri(), tmp_path / "profile", timeout=90)
    assert "<title>sbtc-ops restore drill report</title>" in dom
    assert "pwned" not in dom.split("<body")[0]  # the title was not rewritten by a script
    restore = run.check("restore.complete")
    assert "pwned" in restore["detail"], restore
    assert "&lt;script&gt;document.title='pwned'" in dom  # shown as text
    assert 'id="verdict"' in dom and "Sign-off (4-eyes)" in dom
    assert area.facts.newest_verified_key.hex() in dom


@needs_chromium
def test_html_report_of_a_signed_match(area: Area, tmp_path: Path) -> None:
    page = tmp_path / "match.html"
    env = {"SBTC_OPS_ATTEST__SIGNING_KEY": str(area.serve_key)}
    run = area.verify(
        area.backup_id,
        "--repo",
        str(area.repo),
        "--stacks-url",
        area.node.url,
        "--html",
        str(page),
        state_dir=area.state,
        env=env,
    )
    run.expect(code=0, verdict="match")
    dom = dump_dom(page.as_uri(), tmp_path / "profile", timeout=90)
    assert 'data-verdict="match"' in dom
    assert run.doc["attestation"]["statement_sha256"] in dom
    assert "Stacks tip" in dom


# -- per-backup evidence: backups, metrics, status page -------------------------------------------


def test_backups_metrics_and_status_page_show_signed_drills(area: Area, tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from sbtc_ops.serve.metrics import registry_for
    from sbtc_ops.serve.page import render_page
    from sbtc_ops.serve.snapshot import read_snapshot
    from sbtc_ops.state import StateStore

    attestation = drill(area, key=area.serve_key)
    statement_file = area.attestation_dir() / attestation["name"]
    assert area.cli("attest", "sign", str(statement_file), "--key", str(area.admin_key)).code == 0
    # `backups`: this host's record, then signatures verified against the allowed signers.
    listed = area.cli("backups", "--repo", str(area.repo), "--json")
    assert listed.code == 0, listed.stderr
    (row,) = [r for r in listed.json()["backups"] if r["id"] == area.backup_id]
    assert row["attestation"]["signed_match"] is True
    verified = area.cli(
        "backups", "--repo", str(area.repo), "--json",
        extra={"SBTC_OPS_ATTEST__ALLOWED_SIGNERS": str(area.allowed)},
    )  # fmt: skip
    (row,) = [r for r in verified.json()["backups"] if r["id"] == area.backup_id]
    assert row["attestation"] == {
        "signed_match": True,
        "signatures": 2,
        "statement": attestation["name"],
        "verified_with": str(area.allowed),
    }
    table = area.cli("backups", "--repo", str(area.repo))
    assert "yes (" in table.stdout
    # Metrics and the status page read the state: the drill's own signature + the co-signature.
    with StateStore.open(area.state) as store:
        store.record_event("backup", area.backup_id, "ok", {"size": 1})
    text = generate_latest(registry_for(area.state)).decode()
    assert f'sbtc_ops_backup_signed_drill{{backup="{area.backup_id}"}} 1.0' in text
    assert f'sbtc_ops_backup_attestation_signatures{{backup="{area.backup_id}"}} 2.0' in text
    import time

    page = render_page(read_snapshot(area.state, time.time()))
    assert "signed match, 2 signature(s)" in page


@pytest.mark.s3
def test_local_and_s3_copies_agree(area: Area, s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("attest")
    s3_url = f"s3://{bucket}/signer"
    state = tmp_path / "state"
    repo = tmp_path / "repo"
    env = {**s3_server.env(), "SBTC_OPS_ATTEST__SIGNING_KEY": str(area.serve_key)}
    backup = run_cli(
        "backup", "--db", area.db_url, "--to", str(repo), "--to", s3_url, "--json",
        cwd=tmp_path, env=clean_env(state, env),
    )  # fmt: skip
    assert backup.code == 0, backup.stderr
    backup_id = backup.json()["backup"]["id"]
    run = area.verify(
        backup_id, "--repo", str(repo), "--repo", s3_url, "--stacks-url", area.node.url,
        state_dir=state, env=env,
    )  # fmt: skip
    run.expect(code=0, verdict="match")
    name = run.doc["attestation"]["name"]
    assert len(run.doc["attestation"]["stored"]) == 2
    local = (repo / backup_id / "attestations" / name).read_bytes()
    key = f"signer/{backup_id}/attestations/{name}"
    remote = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert remote == local
    result = run_cli(
        "attest", "verify", backup_id, "--repo", s3_url, "--allowed-signers", str(area.allowed),
        "--json", cwd=tmp_path, env=clean_env(state, s3_server.env()),
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    (statement,) = result.json()["statements"]
    assert statement["subjects_match"] is True
    assert statement["signers"] == ["sbtc-ops@host"]
    # A tampered S3 copy of the archive is caught from S3 alone.
    archive_key = next(
        k for k in s3_server.keys(bucket, f"signer/{backup_id}/") if k.endswith(".dump")
    )
    s3_server.client().put_object(Bucket=bucket, Key=archive_key, Body=b"not the archive")
    result = run_cli(
        "attest", "verify", backup_id, "--repo", s3_url, "--allowed-signers", str(area.allowed),
        "--json", cwd=tmp_path, env=clean_env(state, s3_server.env()),
    )  # fmt: skip
    assert result.code == 1
    assert result.json()["statements"][0]["subjects_match"] is False
