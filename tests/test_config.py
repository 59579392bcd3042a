"""Configuration: precedence, the signer's own config, redaction, clear errors."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops.config import PRESETS, redacted_view
from sbtc_ops.discover.load import load_settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.redact import redact_url
from tests.support.cli import CliResult

DB_PASSWORD = "Zq8-sbtc-db-pass-7731"
PRIVATE_KEY = "9f1e3c5a7b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a6c8b0d1f3e"
API_KEY = "hiro-api-key-5d41402abc4b2a76"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def signer_config(tmp_path: Path) -> Path:
    return write(
        tmp_path / "signer-config.toml",
        f"""
[signer]
db_endpoint = "postgresql://signer:{DB_PASSWORD}@postgres:5432/signer"
private_key = "{PRIVATE_KEY}"
network = "testnet"
deployer = "SNGWPN3XDAQE673MXYXF81016M50NHF5X5PWWM70"
prometheus_exporter_endpoint = "0.0.0.0:9184"
bootstrap_signing_set = ["02aa", "03bb"]

[signer.p2p]
listen_on = ["tcp://0.0.0.0:4122"]

[signer.event_observer]
bind = "0.0.0.0:8801"

[stacks]
endpoints = ["http://stacks-node:20443"]

[bitcoin]
rpc_endpoints = ["http://devnet:devnet@bitcoind:18443"]
""",
    )


def test_presets_apply_when_nothing_is_configured() -> None:
    settings = load_settings(environ={})
    assert settings.network == "mainnet"
    assert settings.effective_deployer == "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
    assert settings.effective_stacks_endpoints == list(PRESETS["mainnet"].stacks_endpoints)
    testnet = load_settings(overrides={"network": "testnet"}, environ={})
    assert testnet.effective_deployer == "SNGWPN3XDAQE673MXYXF81016M50NHF5X5PWWM70"


def test_signer_config_is_imported(signer_config: Path, tmp_path: Path) -> None:
    own = write(tmp_path / "sbtc-ops.toml", f'[signer]\nconfig_path = "{signer_config}"\n')
    settings = load_settings(config_path=own, environ={})
    assert settings.network == "testnet"
    assert settings.signer.listen_on == ["tcp://0.0.0.0:4122"]
    assert settings.signer.event_observer_bind == "0.0.0.0:8801"
    assert settings.signer.prometheus_exporter_endpoint == "0.0.0.0:9184"
    assert settings.effective_stacks_endpoints == ["http://stacks-node:20443"]
    assert settings.signer.private_key is not None
    assert settings.signer.private_key.get_secret_value() == PRIVATE_KEY
    assert settings.signer.private_key_source == f"{signer_config} [signer] private_key"
    shown = redacted_view(settings)
    assert shown["effective"]["private_key_source"] == settings.signer.private_key_source
    assert "private_key_source" not in shown["signer"]  # reported, not a setting
    db_url = settings.effective_db_url
    assert db_url is not None and DB_PASSWORD in db_url.get_secret_value()


def test_precedence_flag_over_env_over_file_over_signer_over_preset(
    signer_config: Path, tmp_path: Path
) -> None:
    own = write(
        tmp_path / "sbtc-ops.toml",
        f'network = "devnet"\n[signer]\nconfig_path = "{signer_config}"\n'
        '[stacks]\nendpoints = ["http://from-file:20443"]\n',
    )
    # file beats signer config
    settings = load_settings(config_path=own, environ={})
    assert settings.network == "devnet"
    assert settings.effective_stacks_endpoints == ["http://from-file:20443"]
    # env beats file
    env = {"SBTC_OPS_NETWORK": "testnet", "SBTC_OPS_STACKS__ENDPOINTS": '["http://from-env:1"]'}
    settings = load_settings(config_path=own, environ=env)
    assert settings.network == "testnet"
    assert settings.effective_stacks_endpoints == ["http://from-env:1"]
    # flag beats env
    settings = load_settings(
        config_path=own,
        environ=env,
        overrides={"network": "mainnet", "stacks": {"endpoints": ["http://from-flag:2"]}},
    )
    assert settings.network == "mainnet"
    assert settings.effective_stacks_endpoints == ["http://from-flag:2"]
    # an unset flag (None) does not hide the lower layers
    settings = load_settings(config_path=own, environ=env, overrides={"network": None})
    assert settings.network == "testnet"


def test_signer_env_convention_overrides_signer_file(signer_config: Path, tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", "SIGNER_SIGNER__NETWORK=mainnet\n# comment\n")
    own = write(
        tmp_path / "sbtc-ops.toml",
        f'[signer]\nconfig_path = "{signer_config}"\nenv_file = "{env_file}"\n',
    )
    settings = load_settings(config_path=own, environ={"SIGNER_SIGNER__PRIVATE_KEY": "ab" * 32})
    assert settings.network == "mainnet"
    assert settings.signer.private_key is not None
    assert settings.signer.private_key.get_secret_value() == "ab" * 32
    assert settings.signer.private_key_source == "SIGNER_SIGNER__PRIVATE_KEY (environment)"


def test_redacted_view_hides_every_secret(signer_config: Path, tmp_path: Path) -> None:
    own = write(
        tmp_path / "sbtc-ops.toml",
        f'[signer]\nconfig_path = "{signer_config}"\n[stacks]\napi_key = "{API_KEY}"\n',
    )
    view = repr(redacted_view(load_settings(config_path=own, environ={})))
    for secret in (DB_PASSWORD, PRIVATE_KEY, API_KEY, "devnet:devnet"):
        assert secret not in view
    assert "postgresql://signer:**********@postgres:5432/signer" in view


def test_redact_url_keeps_user_host_and_path() -> None:
    assert redact_url("postgres://u:p%40ss@h:5432/db?sslmode=require") == (
        "postgres://u:**********@h:5432/db?sslmode=require"
    )
    assert redact_url("http://node:20443") == "http://node:20443"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('netwrk = "mainnet"\n', "netwrk: unknown setting"),
        ('network = "moonnet"\n', "network: Input should be"),
        ('[backup]\njobs = "many"\n', "backup.jobs: Input should be a valid integer"),
        ('[backup]\nrecipients = ["ssh-ed25519 AAAA"]\n', "is not an age X25519 recipient"),
        ("network = \n", "not valid TOML"),
    ],
)
def test_invalid_file_names_file_key_and_problem(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path / "sbtc-ops.toml", toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=path, environ={})
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_invalid_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment SBTC_OPS_BACKUP__JOBS: backup.jobs"):
        load_settings(environ={"SBTC_OPS_BACKUP__JOBS": "zero"})


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.toml", environ={})


def test_config_show_cli_redacts_and_exits_2_on_bad_file(
    cli: Callable[..., CliResult], signer_config: Path, workdir: Path
) -> None:
    own = write(workdir / "sbtc-ops.toml", f'[signer]\nconfig_path = "{signer_config}"\n')
    shown = cli("config", "show", "--json")
    assert shown.code == 0, shown.stderr
    doc = shown.json()
    assert doc["network"] == "testnet"
    assert doc["config_files"] == ["sbtc-ops.toml"]
    for channel in (shown.stdout, shown.stderr):
        assert DB_PASSWORD not in channel and PRIVATE_KEY not in channel
    text = cli("config", "show")
    assert text.code == 0 and "**********" in text.stdout and PRIVATE_KEY not in text.stdout
    # TOML, as sbtc-ops.toml is written: true/false, quoted strings, [tables], no Python.
    shown_toml = tomllib.loads(text.stdout)
    assert shown_toml["network"] == "testnet"
    assert shown_toml["serve"]["dkg_watch"] is doc["serve"]["dkg_watch"]
    assert shown_toml["backup"]["retention"] == doc["backup"]["retention"]
    assert "True" not in text.stdout and "False" not in text.stdout
    assert "# deployer (not set)" in text.stdout or "deployer = " in text.stdout

    own.write_text("[backup]\nformat = 'zip'\n")
    bad = cli("config", "show")
    assert bad.code == 2
    assert "sbtc-ops.toml: backup.format" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad_json = cli("config", "show", "--json")
    assert bad_json.code == 2 and bad_json.json()["ok"] is False


def test_env_config_path_is_used(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.toml", 'network = "testnet"\n')
    shown = cli("config", "show", "--json", env={"SBTC_OPS_CONFIG": str(path)})
    assert shown.code == 0, shown.stderr
    assert shown.json()["network"] == "testnet"
