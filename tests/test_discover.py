"""Discovery without a Docker engine: a reference-shaped compose tree (the audit's `weak`
fixture) read from --compose-dir and from the current directory, settings derived from it
with secrets referenced, and `init`'s refusals."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.discover import discover
from sbtc_ops.discover.load import load_settings
from sbtc_ops.errors import UsageError
from sbtc_ops.host.compose import find_compose_files
from tests.support.cli import CliResult, clean_env, run_cli

WEAK = Path(__file__).parent / "fixtures" / "audit" / "weak" / "root" / "opt" / "sbtc"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
PRIVATE_KEY = "41634762d89dfa09133a4a8e9c1378d0161d29cd0a9433b51f1e3d32947a73dc"


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    target = tmp_path / "sbtc"
    shutil.copytree(WEAK, target)
    return target


def test_compose_files_include_the_nodes_file(deployment: Path) -> None:
    assert find_compose_files(deployment) == [
        deployment / "docker-compose.yml",
        deployment / "nodes" / "docker-compose.chains.yml",
    ]


def test_discovery_derives_the_deployment_from_compose_files(deployment: Path) -> None:
    found = discover(compose_dir=deployment, environ=NO_ENGINE, standard_dirs=())
    value = found.value
    assert found.facts["compose.dir"].source == "--compose-dir"
    assert value("signer.config_path") == str(deployment / "sbtc-signer" / "signer-config.toml")
    assert value("signer.service") == "sbtc-signer"
    assert "SIGNER_SIGNER__DB_ENDPOINT" in value("signer.env")
    assert value("db.service") == "postgres" and value("db.published") is False
    # The planted default password equals the user name: showing the user would show it.
    assert value("db.endpoint") in (
        "postgresql://postgres:**********@postgres:5432/signer",
        "postgresql://**********",
    )
    assert f"{deployment / '.env'} POSTGRES_PASSWORD" in value("db.credentials")
    assert f"{deployment / '.env'} SIGNER_SIGNER__PRIVATE_KEY" in value("signer.private_key_source")
    assert value("signer.metrics_url") == "http://127.0.0.1:9184/metrics"
    assert value("signer.info_url") == "http://127.0.0.1:8801/info"
    assert set(value("nodes.services")) == {"bitcoin", "stacks-blockchain"}
    assert value("images")["postgres"]["pinned"] is True
    assert value("images")["sbtc-signer"]["pinned"] is False
    assert value("logging")["sbtc-signer"]["driver"] == "fluentd"
    assert any("no Docker engine answers" in note for note in found.notes)
    shown = repr(found.describe())
    assert PRIVATE_KEY not in shown and "devnet@" not in shown


def test_nothing_found_says_where_it_looked(tmp_path: Path) -> None:
    found = discover(cwd=tmp_path, environ=NO_ENGINE, standard_dirs=(tmp_path / "none",))
    assert not found.found
    assert "no compose file in the current directory" in found.missing[0]
    with pytest.raises(UsageError, match="no compose file"):
        discover(compose_dir=tmp_path, environ=NO_ENGINE)


def test_settings_from_compose_dir_reference_the_secrets(deployment: Path) -> None:
    """docker.compose_dir alone gives the signer's env as compose builds it."""
    config = deployment / "sbtc-ops.toml"
    config.write_text(f'[docker]\ncompose_dir = "{deployment}"\n')
    settings = load_settings(config_path=config, environ=NO_ENGINE)
    assert settings.signer.db_endpoint is not None
    db_url = settings.signer.db_endpoint.get_secret_value()
    assert db_url == "postgresql://postgres:postgres@postgres:5432/signer"
    assert settings.signer.private_key is not None
    assert settings.signer.private_key.get_secret_value() == PRIVATE_KEY
    assert settings.signer.private_key_source == (
        f"SIGNER_SIGNER__PRIVATE_KEY (compose project {deployment})"
    )
    assert PRIVATE_KEY not in config.read_text()


def run(cwd: Path, *args: str) -> CliResult:
    return run_cli(*args, cwd=cwd, env=clean_env(cwd / ".state", NO_ENGINE))


def test_init_writes_a_private_config_without_secrets(deployment: Path) -> None:
    result = run(deployment, "init", "--backup-dir", str(deployment / "backups"))
    assert result.code == 0, result.stderr
    assert "from the current directory" in result.stdout
    written = deployment / "sbtc-ops.toml"
    assert written.stat().st_mode & 0o777 == 0o600
    text = written.read_text()
    doc = tomllib.loads(text)
    assert doc["docker"]["db_container"] == "postgres"
    assert doc["audit"]["metrics_url"] == "http://127.0.0.1:9184/metrics"
    for secret in (PRIVATE_KEY, "emily-key-9f3c1a7be24d40e6", "wJalrXUtnFEMI"):
        assert secret not in text and secret not in result.stdout
    again = run(deployment, "init")
    assert again.code == 2 and "--force" in again.stderr


def test_commands_without_config_run_on_discovered_settings(deployment: Path) -> None:
    result = run(deployment, "config", "show", "--json")
    assert result.code == 0, result.stderr
    assert "running on settings discovered" in result.stderr
    shown = result.json()
    assert shown["docker"]["db_container"] == "postgres"
    assert shown["effective"]["db_url"] in (
        "postgresql://postgres:**********@postgres:5432/signer",
        "postgresql://**********",  # the password is also the user name: all of it hidden
    )


def test_init_with_nothing_to_find(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("init", env=NO_ENGINE)
    assert result.code == 1
    assert "not found" in result.stdout and "compose project" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = cli("init", "--compose-dir", str(empty), env=NO_ENGINE)
    assert bad.code == 2 and "no compose file" in bad.stderr


def test_container_checks_skip_without_an_engine(cli: Callable[..., CliResult]) -> None:
    """The running-deployment area needs a live engine: with none it says so, per check."""
    result = cli("audit", "--only", "containers", "--json", env=NO_ENGINE)
    doc = result.json()
    assert doc["areas"] == ["containers"]
    statuses = {f["id"]: (f["status"], f["detail"]) for f in doc["findings"]}
    assert set(statuses) == {f"CTR-00{n}" for n in range(1, 8)}
    for status, detail in statuses.values():
        assert status == "skip" and "no Docker engine answers" in detail


HOSTILE_COMPOSE = """
services:
  sbtc-signer:
    image: [not, a, string]
    ports: "9184:9184"
    volumes: {odd: mapping}
    environment: 42
    env_file: {path: ../../../../etc/shadow}
    container_name: 7
  postgres: null
  other: [1, 2]
"""


@pytest.mark.parametrize(
    "text",
    [HOSTILE_COMPOSE, "services: [", "just a string", "services:\n  x:\n    image: ${A:?}\n"],
)
def test_hostile_compose_files_are_reported_not_crashed_on(tmp_path: Path, text: str) -> None:
    (tmp_path / "docker-compose.yml").write_text(text)
    for args in ((), ("--compose-dir", str(tmp_path))):
        result = run(tmp_path, "init", "--json", *args)
        assert result.code in (1, 2), result.stderr
        assert "Traceback" not in result.stderr
        if result.code == 1:
            doc = result.json()
            assert doc["ok"] is False and doc["missing"] and doc["written"] is None
        assert not (tmp_path / "sbtc-ops.toml").exists()
