"""sbtc-ops against the Docker lab's reference-shaped deployment: discovery (`init`) from the
compose directory, from the running project and from --compose-dir; `audit` with no
configuration; `backup` through the DB container and `verify` of it; the DKG watch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyrage
import pytest

from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.docker_lab import DOCKER_HOST, SOCKET, DockerLab
from tests.support.serve import NO_JOBS, running_daemon, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
LAB_ENGINE = {"DOCKER_HOST": DOCKER_HOST}
Cli = Callable[..., CliResult]


def found(result: CliResult) -> dict[str, Any]:
    assert result.code == 0, result.stderr
    doc: dict[str, Any] = result.json()
    return {key: fact["value"] for key, fact in doc["found"].items()} | {
        f"{key}@": fact["source"] for key, fact in doc["found"].items()
    }


def assert_no_secret(text: str, lab: DockerLab) -> None:
    assert lab.signer_private_key.hex() not in text
    assert "postgres:postgres@" not in text
    assert "lab-rpc-password" not in text


def test_init_from_the_compose_directory(docker_lab: DockerLab, tmp_path: Path) -> None:
    output = tmp_path / "sbtc-ops.toml"
    result = run_cli(
        "init", "--json", "--output", str(output),
        cwd=docker_lab.project_dir, env=clean_env(tmp_path / "state", NO_ENGINE),
    )  # fmt: skip
    facts = found(result)
    project = docker_lab.project_dir
    assert facts["compose.dir"] == str(project)
    assert facts["compose.dir@"] == "the current directory"
    assert facts["compose.files"] == [
        str(project / "docker-compose.yml"),
        str(project / "nodes" / "docker-compose.chains.yml"),
    ]
    assert facts["signer.config_path"] == str(project / "sbtc-signer" / "signer-config.toml")
    assert "volume /signer-config.toml" in facts["signer.config_path@"]
    assert facts["db.service"] == "postgres" and facts["db.published"] is False
    assert str(project / ".env") in facts["db.credentials"]
    assert "POSTGRES_PASSWORD" in facts["db.credentials"]
    assert "SIGNER_SIGNER__PRIVATE_KEY" in facts["signer.private_key_source"]
    assert facts["signer.metrics_url"] == "http://127.0.0.1:9184/metrics"
    assert facts["signer.info_url"] == "http://127.0.0.1:8801/info"
    assert set(facts["nodes.services"]) == {"bitcoin", "stacks-core"}
    assert "signer.container" not in facts  # no engine was asked
    assert output.stat().st_mode & 0o777 == 0o600
    assert_no_secret(output.read_text() + result.stdout, docker_lab)


def test_init_from_the_running_project_in_any_directory(docker_lab: DockerLab, cli: Cli) -> None:
    result = cli("init", "--json", "--dry-run", env=LAB_ENGINE)
    facts = found(result)
    project = docker_lab.project_dir
    assert facts["compose.dir"] == str(project)
    assert "com.docker.compose.project.working_dir" in facts["compose.dir@"]
    assert "config_files" in facts["compose.files@"]
    assert facts["compose.project"] == docker_lab.project_name
    assert facts["signer.container"] == "sbtc-signer"
    assert facts["signer.config_path"] == str(project / "sbtc-signer" / "signer-config.toml")
    assert "mount of /signer-config.toml" in facts["signer.config_path@"]
    assert facts["db.container"] == "postgres"
    assert facts["db.networks"] == [f"{docker_lab.project_name}_default"]
    assert facts["signer.metrics_url"] == "http://127.0.0.1:9184/metrics"
    assert facts["signer.metrics_url@"].startswith("engine: published port")
    ip = docker_lab.container_ip("sbtc-signer")
    assert facts["signer.info_url_network"] == f"http://{ip}:8801/info"
    assert httpx.get(facts["signer.info_url_network"], timeout=10).status_code == 200
    assert facts["images"]["sbtc-signer"]["pinned"] is False
    assert facts["images"]["sbtc-signer"]["repo_digests"] == []  # built locally
    assert facts["images"]["sbtc-signer"]["image_id"].startswith("sha256:")
    assert facts["logging"]["sbtc-signer"] == {"driver": "json-file", "options": {}}
    assert result.json()["written"] is None
    assert_no_secret(result.stdout, docker_lab)


def test_init_from_an_explicit_compose_dir(docker_lab: DockerLab, cli: Cli, workdir: Path) -> None:
    result = cli("init", "--compose-dir", str(docker_lab.project_dir), env=NO_ENGINE)
    assert result.code == 0, result.stderr
    assert "from --compose-dir" in result.stdout
    assert "wrote sbtc-ops.toml" in result.stdout
    written = (workdir / "sbtc-ops.toml").read_text()
    assert f'compose_dir = "{docker_lab.project_dir}"' in written
    assert 'db_container = "postgres"' in written
    assert_no_secret(written, docker_lab)


def test_audit_without_configuration_finds_the_planted_problems(
    docker_lab: DockerLab, cli: Cli
) -> None:
    result = cli("audit", "--json", env=LAB_ENGINE, timeout=300)
    assert result.code == 1, result.stderr
    assert "running on settings discovered" in result.stderr
    findings = {f["id"]: f for f in result.json()["findings"]}
    env_file = str(docker_lab.project_dir / ".env")
    expected = {
        "MON-006": "9184",  # metrics published on every interface
        "SEC-004": env_file,  # world-readable .env
        "KEY-001": env_file,
        "SEC-003": "well-known default password",
        "IMG-001": "4 of 4 images not pinned",
        "LOG-004": "json-file without max-size",
    }
    for check, needle in expected.items():
        assert findings[check]["status"] in ("warn", "fail"), findings[check]
        assert needle in findings[check]["detail"], findings[check]
    # What the engine reports about the running containers (audit/containers.py).
    engine = {
        "CTR-001": ("fail", "sbtc-signer: SIGNER_SIGNER__PRIVATE_KEY"),
        "CTR-002": ("warn", "sbtc-signer: 0.0.0.0:9184->9184 (signer metrics)"),
        "CTR-003": ("warn", "running as root"),
        "CTR-004": ("warn", "sbtc-signer (json-file)"),
        "CTR-005": ("warn", "sbtc-signer (sbtc-ops-lab/signer:latest)"),
        "CTR-006": ("pass", "every running container has a restart policy"),
        "CTR-007": ("pass", "/metrics: 200"),
    }
    for check, (status, needle) in engine.items():
        assert findings[check]["status"] == status, findings[check]
        assert needle in findings[check]["detail"], findings[check]
    assert "POSTGRES_PASSWORD" in findings["CTR-001"]["detail"]
    skipped = " ".join(f["detail"] for f in findings.values() if f["status"] == "skip")
    for unconfigured in ("no compose files configured", "signer database not configured"):
        assert unconfigured not in skipped
    assert_no_secret(result.stdout + result.stderr, docker_lab)


def exec_commands(since: float) -> list[str]:
    """The command of every `docker exec` into the postgres container since `since`, as the
    engine reports it to anyone who may read its events (`docker events`)."""
    transport = httpx.HTTPTransport(uds=str(SOCKET))
    filters = json.dumps({"container": ["postgres"], "event": ["exec_create"]})
    params = {"since": str(int(since)), "until": str(int(time.time()) + 1), "filters": filters}
    with httpx.Client(transport=transport, base_url="http://docker", timeout=10) as client:
        body = client.get("/events", params=params).text
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    return [str(e["Action"]).removeprefix("exec_create: ") for e in events]


def test_init_backup_verify_through_the_db_container(
    docker_lab: DockerLab, cli: Cli, workdir: Path
) -> None:
    assert docker_lab.db is not None
    # The README's quick start, in order, in one directory, nothing written by hand.
    assert cli("init", "--backup-dir", str(workdir / "backups"), env=LAB_ENGINE).code == 0
    audit = cli("audit", "--json", env=LAB_ENGINE, timeout=300)
    assert audit.code == 1 and audit.json()["findings"], audit.stderr  # planted problems
    identity = pyrage.x25519.Identity.generate()
    identity_file = workdir / "backup.agekey"
    identity_file.write_text(f"{identity}\n")
    started = time.time() - 1
    backup = cli("backup", "--recipient", str(identity.to_public()), "--json", env=LAB_ENGINE)
    assert backup.code == 0, backup.stderr
    manifest = backup.json()["backup"]
    assert [f["path"] for f in manifest["files"]] == ["signer.dump.age"]
    assert manifest["pg_dump_version"].startswith("15.")
    assert manifest["server_version"].startswith("15.")
    rows = {k.removeprefix("sbtc_signer."): v for k, v in manifest["rows"].items()}
    assert rows["dkg_shares"] == int(docker_lab.psql("SELECT count(*) FROM sbtc_signer.dkg_shares"))
    assert rows["bitcoin_blocks"] == docker_lab.db.row_counts["bitcoin_blocks"]
    assert manifest["newest_verified_aggregate_key"] == docker_lab.db.newest_verified_key.hex()
    dumps = [c for c in exec_commands(started) if "--snapshot=" in c]
    assert len(dumps) == 1, "pg_dump did not run once inside the postgres container"
    assert "/usr/lib/postgresql/15/bin/pg_dump --format=custom" in dumps[0]
    assert "password=" not in dumps[0]
    assert_no_secret(dumps[0], docker_lab)
    with_identity = {**LAB_ENGINE, "SBTC_OPS_BACKUP__IDENTITY_FILE": str(identity_file)}
    verify = cli("verify", "--latest", "--json", env=with_identity, timeout=300)
    assert verify.json()["verdict"] == "match", verify.stdout
    assert verify.code == 0


def newest_dkg_key(lab: DockerLab) -> str:
    return lab.psql(
        "SELECT encode(aggregate_key, 'hex') FROM sbtc_signer.dkg_shares "
        "ORDER BY created_at DESC LIMIT 1"
    )


def insert_dkg_round(lab: DockerLab, key_hex: str) -> None:
    """A new DKG round, written inside the DB container the way the signer would."""
    lab.psql(
        "CREATE TEMP TABLE r AS SELECT * FROM sbtc_signer.dkg_shares "
        "ORDER BY created_at DESC LIMIT 1; "
        f"UPDATE r SET aggregate_key = decode('{key_hex}', 'hex'), created_at = now(), "
        "dkg_shares_status = 'unverified'; "
        "INSERT INTO sbtc_signer.dkg_shares SELECT * FROM r"
    )


def test_dkg_row_inserted_in_the_container_gets_a_dkg_only_backup(
    docker_lab: DockerLab, cli: Cli, workdir: Path
) -> None:
    backups = workdir / "backups"
    assert cli("init", "--backup-dir", str(backups), env=LAB_ENGINE).code == 0
    config = workdir / "sbtc-ops.toml"
    serve = {**NO_JOBS, "dkg_watch": True, "dkg_poll_interval_s": 1.0}
    with config.open("a") as handle:
        handle.write("\n[serve]\n")
        handle.writelines(f"{k} = {json.dumps(v)}\n" for k, v in serve.items())
    key_hex = "03" + f"{int(time.time() * 1000):064x}"
    with running_daemon(config, workdir / "state", LAB_ENGINE) as daemon:
        # The first poll backs up the newest shares already there; then a new round appears.
        wait_until(lambda: [r for r in daemon.runs("dkg-backup") if r.outcome == "ok"], 60,
                   daemon.describe)  # fmt: skip
        insert_dkg_round(docker_lab, key_hex)
        assert newest_dkg_key(docker_lab) == key_hex

        def backed_up() -> list[dict[str, Any]]:
            manifests = [json.loads(p.read_text()) for p in backups.glob("*/manifest.json")]
            return [m for m in manifests if key_hex in json.dumps(m.get("dkg_keys"))]

        manifests = wait_until(backed_up, 60, lambda: "\n".join(daemon.stderr[-20:]))
    assert manifests[0]["kind"] == "dkg-only"
    assert manifests[0]["dkg_keys"][0]["aggregate_key"] == key_hex
    # The round stays in the lab DB; other tests compare the newest *verified* key and live
    # row counts, which it does not change.
