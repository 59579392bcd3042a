"""Where settings come from: every layer in the documented order (README "Configuration",
docs/configuration.md), discovery only when a command runs with nothing configured, and the
renamed and removed settings (docs/configuration.md, "Migrating settings")."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.config import MIGRATIONS, PRESETS, InvalidConfig, Settings
from sbtc_ops.config_sample import reference, sample_toml
from sbtc_ops.discover.load import load_for_command, load_settings
from tests.support.cli import CliResult, clean_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
WEAK = ROOT / "tests" / "fixtures" / "audit" / "weak" / "root" / "opt" / "sbtc"
# The layers above the model's defaults, lowest first, as the README numbers them (2-10).
LAYERS = (
    "preset",
    "discovered",
    "signer config",
    "signer env file",
    "compose",
    "signer environment",
    "sbtc-ops.toml",
    "SBTC_OPS environment",
    "flags",
)


def url(layer: str) -> str:
    return f"http://{layer.replace(' ', '-').replace('.', '-').lower()}:20443"


def layered(tmp_path: Path, top: str) -> dict[str, Any]:
    """load_settings arguments setting stacks.endpoints in every layer up to `top`."""
    upto = LAYERS[: LAYERS.index(top) + 1]
    environ: dict[str, str] = dict(NO_ENGINE)
    own: list[str] = []
    signer: list[str] = []
    if "signer config" in upto:
        config = tmp_path / "signer-config.toml"
        config.write_text(f'[stacks]\nendpoints = ["{url("signer config")}"]\n')
        signer.append(f'config_path = "{config}"')
    if "signer env file" in upto:
        env_file = tmp_path / "signer.env"
        env_file.write_text(f"SIGNER_STACKS__ENDPOINTS={url('signer env file')}\n")
        signer.append(f'env_file = "{env_file}"')
    if "compose" in upto:
        compose = tmp_path / "compose"
        compose.mkdir()
        (compose / "docker-compose.yml").write_text(
            "services:\n  sbtc-signer:\n    image: signer\n    environment:\n"
            f"      SIGNER_STACKS__ENDPOINTS: {url('compose')}\n"
        )
        own.append(f'[docker]\ncompose_dir = "{compose}"')
    if "signer environment" in upto:
        environ["SIGNER_STACKS__ENDPOINTS"] = url("signer environment")
    if "sbtc-ops.toml" in upto:
        own.append(f'[stacks]\nendpoints = ["{url("sbtc-ops.toml")}"]')
    if "SBTC_OPS environment" in upto:
        environ["SBTC_OPS_STACKS__ENDPOINTS"] = f'["{url("SBTC_OPS environment")}"]'
    if signer:
        own.append("[signer]\n" + "\n".join(signer))
    config_path = tmp_path / "sbtc-ops.toml"
    config_path.write_text("\n".join(own) + "\n")
    return {
        "config_path": config_path,
        "environ": environ,
        "discovered": {"stacks": {"endpoints": [url("discovered")]}}
        if "discovered" in upto
        else None,
        "overrides": {"stacks": {"endpoints": [url("flags")]}} if "flags" in upto else None,
    }


@pytest.mark.parametrize("top", LAYERS)
def test_each_layer_overrides_every_layer_below_it(tmp_path: Path, top: str) -> None:
    settings = load_settings(**layered(tmp_path, top))
    expected = list(PRESETS["mainnet"].stacks_endpoints) if top == "preset" else [url(top)]
    assert settings.effective_stacks_endpoints == expected


def test_the_readme_lists_the_layers_in_the_order_tested() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Precedence: each layer") :]
    items = re.findall(r"^(\d+)\. ", section[: section.index("Layers 4")], re.MULTILINE)
    assert items == [str(n) for n in range(1, len(LAYERS) + 2)]  # defaults, then LAYERS
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| (\d+) \|", doc, re.MULTILINE)
    assert rows == items


def test_what_loading_reports_is_not_a_setting(tmp_path: Path) -> None:
    config = write(tmp_path / "sbtc-ops.toml", 'source_files = ["/elsewhere.toml"]\n')
    with pytest.raises(InvalidConfig, match="source_files: unknown setting"):
        load_settings(config_path=config, environ={})
    config.write_text("")
    assert load_settings(config_path=config, environ={}).source_files == [str(config)]


def test_clashing_environment_variables_are_a_configuration_error() -> None:
    environ = {"SBTC_OPS_STACKS": "x", "SBTC_OPS_STACKS__RETRIES": "2"}
    with pytest.raises(InvalidConfig) as raised:
        load_settings(environ=dict(sorted(environ.items())))
    assert raised.value.problems[0].layer == "environment SBTC_OPS_STACKS__RETRIES"


# -- discovery: explicit ---------------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "sbtc"
    shutil.copytree(WEAK, target)
    monkeypatch.chdir(target)  # discovery looks in the current directory first
    return target


def test_loading_settings_never_discovers(deployment: Path) -> None:
    settings = load_settings(environ=NO_ENGINE)
    assert settings.docker.compose_dir is None and settings.signer.db_endpoint is None


def test_a_command_with_nothing_configured_discovers(deployment: Path) -> None:
    settings, found = load_for_command(None, None, NO_ENGINE)
    assert found is not None and found.compose_dir == str(deployment)
    assert settings.docker.compose_dir == deployment
    assert settings.docker.compose_files  # the audit reads the same files


def test_discovery_is_off_with_the_switch_or_anything_configured(deployment: Path) -> None:
    off = {**NO_ENGINE, "SBTC_OPS_NO_DISCOVERY": "1"}
    settings, found = load_for_command(None, None, off)  # the switch is not a setting
    assert found is None and settings.docker.compose_dir is None
    _, found = load_for_command(None, {"db": {"url": "postgresql://x@127.0.0.1/db"}}, NO_ENGINE)
    assert found is None


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(*args, cwd=cwd, env=clean_env(cwd / ".state", {**NO_ENGINE, **(env or {})}))


def test_the_cli_says_it_discovered_and_how_to_turn_it_off(deployment: Path) -> None:
    result = run(deployment, "config", "show", "--json")
    assert result.code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "discovered" in line]
    assert len(notes) == 1 and "SBTC_OPS_NO_DISCOVERY=1" in notes[0]
    assert str(deployment) in notes[0]
    off = run(deployment, "config", "show", "--json", env={"SBTC_OPS_NO_DISCOVERY": "1"})
    assert off.code == 0, off.stderr
    assert "discovered" not in off.stderr and off.json()["docker"]["compose_dir"] is None


# -- renamed and removed settings --------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_an_honoured_old_key_is_read_as_the_new_one_with_a_warning(tmp_path: Path) -> None:
    config = write(
        tmp_path / "sbtc-ops.toml",
        '[audit]\ncompose_files = ["/opt/sbtc/docker-compose.yml"]\n'
        '[serve]\nverify_jobs = 3\n[signer]\nprivate_key_source = "somewhere"\n',
    )
    settings = load_settings(config_path=config, environ={})
    assert settings.docker.compose_files == [Path("/opt/sbtc/docker-compose.yml")]
    assert settings.verify.jobs == 3
    assert settings.signer.private_key_source is None  # an output: ignored
    notes = "\n".join(settings.deprecations)
    for old, new in (("audit.compose_files", "docker.compose_files"), ("serve.verify_jobs", "")):
        assert f"{config}: {old} is deprecated" in notes and new in notes
    assert "signer.private_key_source is deprecated" in notes and "ignored" in notes


def test_a_migrated_key_keeps_its_layer_s_precedence(tmp_path: Path) -> None:
    config = write(tmp_path / "sbtc-ops.toml", "[verify]\njobs = 4\n")
    env = {"SBTC_OPS_SERVE__VERIFY_JOBS": "3"}
    settings = load_settings(config_path=config, environ=env)
    assert settings.verify.jobs == 3  # the environment is above the file, old name or not
    assert settings.deprecations == [
        "environment: serve.verify_jobs is deprecated (one number of restore jobs for every "
        "drill); read as verify.jobs: rename it (docs/configuration.md, Migrating settings)"
    ]
    both = write(tmp_path / "both.toml", "[verify]\njobs = 4\n[serve]\nverify_jobs = 3\n")
    settings = load_settings(config_path=both, environ={})
    assert settings.verify.jobs == 4 and "verify.jobs is also set" in settings.deprecations[0]


def test_old_keys_given_to_the_model_directly_are_migrated() -> None:
    settings = Settings.model_validate({"audit": {"compose_files": ["/compose.yaml"]}})
    assert settings.docker.compose_paths() == [Path("/compose.yaml")]
    assert "audit.compose_files is deprecated" in settings.deprecations[0]


def test_a_removed_key_is_an_error_naming_its_replacement(tmp_path: Path) -> None:
    config = write(tmp_path / "sbtc-ops.toml", "[audit]\nkey_backup_max_age_days = 365\n")
    with pytest.raises(InvalidConfig) as raised:
        load_settings(config_path=config, environ={})
    [problem] = raised.value.problems
    assert (problem.layer, problem.key) == (str(config), "audit.key_backup_max_age_days")
    assert problem.message.startswith("removed: use key.backup_max_age_days")


def test_the_cli_warns_for_an_old_key_and_exits_2_for_a_removed_one(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    old = write(tmp_path / "old.toml", "[serve]\nverify_jobs = 3\n")
    shown = cli("--config", str(old), "config", "show", "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json()["verify"]["jobs"] == 3
    assert "warning:" in shown.stderr and "serve.verify_jobs is deprecated" in shown.stderr
    removed = write(tmp_path / "removed.toml", "[audit]\nkey_backup_max_age_days = 30\n")
    failed = cli("--config", str(removed), "config", "show")
    assert failed.code == 2 and "use key.backup_max_age_days" in failed.stderr
    checked = cli("--config", str(removed), "config", "check", "--json")
    assert checked.code == 1 and "key.backup_max_age_days" in checked.stdout


def test_no_old_key_is_a_setting_any_more() -> None:
    keys = {setting["key"] for setting in reference()["settings"]}
    sample = sample_toml()
    for migration in MIGRATIONS:
        assert migration.old not in keys
        assert migration.new is None or migration.new in keys
        section, _, name = migration.old.rpartition(".")
        block = sample[sample.index(f"[{section}]") :]
        block = block[: block.find("\n[") if "\n[" in block else None]
        assert f"#{name} = " not in block
    assert Settings().key.backup_max_age_days == 90 and Settings().verify.jobs == 2


def test_every_migration_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    section = doc[doc.index("## Migrating settings") :]
    for migration in MIGRATIONS:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{migration.old}`"))
        assert ("warning" in row) == migration.honoured
        assert migration.new is None or f"`{migration.new}`" in row
