"""The settings model is the documentation: every setting is described and exemplified, the
sample written from it round-trips, and `config check` names the layer of each problem."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from sbtc_ops.config import Settings, is_computed_default
from sbtc_ops.config_sample import sample_toml
from sbtc_ops.discover.load import load_settings
from tests.support.cli import CliResult


def settings_fields(
    model: type[BaseModel] = Settings, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo, bool]]:
    """(dotted key, field, is a section) for every field of the model, recursively."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue  # bookkeeping, not a setting
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield f"{prefix}{name}", field, True
            yield from settings_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field, False


SETTINGS = [(key, field) for key, field, section in settings_fields() if not section]
SECTIONS = [(key, field) for key, field, section in settings_fields() if section]


def test_the_walk_sees_nested_sections() -> None:
    keys = {key for key, _ in SETTINGS}
    assert {"network", "backup.retention.keep_daily", "key.expected_owner"} <= keys
    assert {"backup", "backup.s3", "key"} <= {key for key, _ in SECTIONS}


def test_every_setting_has_a_description_and_an_example() -> None:
    undocumented = [key for key, field in SETTINGS if not (field.description or "").strip()]
    without_example = [key for key, field in SETTINGS if not field.examples]
    assert undocumented == [], "settings without a description"
    assert without_example == [], "settings without an example"


def test_every_section_has_a_description() -> None:
    assert [key for key, field in SECTIONS if not (field.description or "").strip()] == []


@pytest.mark.parametrize(("key", "field"), SETTINGS, ids=[key for key, _ in SETTINGS])
def test_every_example_is_a_valid_value(key: str, field: FieldInfo) -> None:
    assert field.examples
    *sections, name = key.split(".")
    doc: dict[str, Any] = {name: field.examples[0]}
    for section in reversed(sections):
        doc = {section: doc}
    Settings.model_validate(doc)  # raises when the example is not accepted


def effective(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sample_loads_back_to_the_defaults(tmp_path: Path) -> None:
    sample = write(tmp_path / "sbtc-ops.toml", sample_toml())
    assert load_settings(config_path=sample, environ={}).model_dump() == (
        load_settings(environ={}).model_dump()
    )


def test_every_sample_line_uncommented_sets_its_default_or_example(tmp_path: Path) -> None:
    # The examples name signer files and a compose project that do not exist here; the rest
    # is taken as written.
    missing_files = ("#config_path = ", "#env_file = ", "#compose_dir = ")
    lines = [
        re.sub(r"^#(\w+ = )", r"\1", line)
        for line in sample_toml().splitlines()
        if not line.startswith(missing_files)
    ]
    settings = load_settings(config_path=write(tmp_path / "all.toml", "\n".join(lines)), environ={})
    defaults = Settings()
    for key, field in SETTINGS:
        if key in ("signer.config_path", "signer.env_file", "docker.compose_dir"):
            continue
        written = f"#{key.rpartition('.')[2]} = "
        assert any(line.startswith(written) for line in sample_toml().splitlines()), key
        expected = effective(defaults, key)
        if expected is None or is_computed_default(field):  # no fixed default: the example
            expected = TypeAdapter(field.annotation).validate_python(field.examples[0])
        assert effective(settings, key) == expected, key


def test_sample_cli_prints_the_sample_and_a_json_reference(
    cli: Callable[..., CliResult],
) -> None:
    text = cli("config", "sample")
    assert text.code == 0 and text.stdout == sample_toml()
    reference = cli("config", "sample", "--json")
    assert reference.code == 0
    entries = {entry["key"]: entry for entry in reference.json()["settings"]}
    assert entries["backup.compression"]["default"] == "gzip:1"
    assert entries["backup.compression"]["description"].startswith("pg_dump --compress")
    assert entries["backup.s3"]["section"] is True
    assert len([e for e in entries.values() if not e.get("section")]) == len(SETTINGS)


# -- config check ------------------------------------------------------------------------


@pytest.fixture
def signer_config(workdir: Path) -> Path:
    return write(workdir / "signer-config.toml", '[signer]\nnetwork = "testnet"\n')


def check(cli: Callable[..., CliResult], *args: str, **kwargs: Any) -> CliResult:
    result = cli("config", "check", *args, **kwargs)
    assert "Traceback" not in result.stderr
    return result


def test_check_accepts_a_valid_configuration(
    cli: Callable[..., CliResult], workdir: Path, signer_config: Path
) -> None:
    write(workdir / "sbtc-ops.toml", f'[signer]\nconfig_path = "{signer_config}"\n')
    result = check(cli)
    assert result.code == 0, result.stdout + result.stderr
    assert "configuration is valid" in result.stdout and str(signer_config) in result.stdout
    as_json = check(cli, "--json")
    assert as_json.code == 0
    assert as_json.json() == {
        "ok": True,
        "problems": [],
        "files": ["sbtc-ops.toml", str(signer_config)],
    }


def test_check_names_the_layer_of_every_problem(
    cli: Callable[..., CliResult], workdir: Path, signer_config: Path
) -> None:
    signer_config.write_text("[signer]\ndb_endpoint = 5\n")
    write(
        workdir / "sbtc-ops.toml",
        f'[signer]\nconfig_path = "{signer_config}"\n[backup]\njobs = "many"\n'
        "[key]\nbackup_max_age_dayz = 3\n",
    )
    env = {"SBTC_OPS_STACKS__RETRIES": "hunter2-not-a-number"}
    result = check(cli, "--json", env=env)
    assert result.code == 1, result.stderr
    problems = {p["key"]: p["layer"] for p in result.json()["problems"]}
    assert problems == {
        "backup.jobs": "sbtc-ops.toml",
        "key.backup_max_age_dayz": "sbtc-ops.toml",
        "stacks.retries": "environment SBTC_OPS_STACKS__RETRIES",
        "signer.db_endpoint": f"the signer's configuration ({signer_config})",
    }
    text = check(cli, env=env)
    assert text.code == 1
    assert "4 problems" in text.stdout
    assert "environment SBTC_OPS_STACKS__RETRIES: stacks.retries:" in text.stdout
    assert "hunter2" not in text.stdout + text.stderr  # a bad value is never echoed


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("network = \n", "", "not valid TOML"),
        ('[audit]\nroster = "/etc/roster.toml"\n', "audit.roster", "unknown setting"),
        ('[serve]\nbackup_cron = "daily"\n', "serve.backup_cron", "not a 5-field cron"),
    ],
)
def test_check_reports_a_bad_file_as_a_problem(
    cli: Callable[..., CliResult], tmp_path: Path, toml: str, key: str, message: str
) -> None:
    path = write(tmp_path / "elsewhere.toml", toml)
    result = check(cli, "--json", env={"SBTC_OPS_CONFIG": str(path)})
    assert result.code == 1
    [problem] = result.json()["problems"]
    assert problem["layer"] == str(path) and problem["key"] == key
    assert message in problem["message"]


def test_check_names_a_wrong_signer_network(
    cli: Callable[..., CliResult], workdir: Path, signer_config: Path
) -> None:
    signer_config.write_text('[signer]\nnetwork = "moonnet"\n')
    write(workdir / "sbtc-ops.toml", f'[signer]\nconfig_path = "{signer_config}"\n')
    result = check(cli)
    assert result.code == 1
    assert f"{signer_config}: signer.network: 'moonnet' is not one of" in result.stdout


def test_check_exits_2_when_a_file_cannot_be_read(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    missing = check(cli, "--json", env={"SBTC_OPS_CONFIG": str(workdir / "nope.toml")})
    assert missing.code == 2 and "does not exist" in missing.json()["error"]
    write(workdir / "sbtc-ops.toml", '[signer]\nconfig_path = "/nonexistent/signer.toml"\n')
    unreadable = check(cli)
    assert unreadable.code == 2 and "cannot read" in unreadable.stderr


# -- the hand-written examples in the documentation -----------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def toml_blocks() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ```toml block (and `cat > …sbtc-ops.toml <<'EOF'` in a shell block) of the
    documentation that is (part of) an sbtc-ops.toml: its top-level keys are all settings
    (secrets inventories and rosters are other files)."""
    pattern = r"```toml\n(.*?)```|cat > \S*sbtc-ops\.toml <<'EOF'\n(.*?)\nEOF"
    for path in DOCS:
        text = path.read_text()
        found = re.findall(pattern, text, re.DOTALL)
        for number, block in enumerate(toml or shell for toml, shell in found):
            doc = tomllib.loads(block)
            if doc and set(doc) <= set(Settings.model_fields):
                yield f"{path.name}#{number}", doc


DOC_BLOCKS = list(toml_blocks())


def test_the_documentation_has_settings_examples() -> None:
    assert len(DOC_BLOCKS) >= 3


@pytest.mark.parametrize(("where", "doc"), DOC_BLOCKS, ids=[w for w, _ in DOC_BLOCKS])
def test_documented_settings_are_valid(where: str, doc: dict[str, Any]) -> None:
    settings = Settings.model_validate(doc)  # an unknown or misspelt key fails here
    assert settings.deprecations == []  # nor a renamed one (docs/configuration.md)
