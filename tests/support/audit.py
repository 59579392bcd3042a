"""Audit fixture scenarios: a host tree, recorded command outputs and sbtc-ops settings.

tests/fixtures/audit/<scenario>/
  root/            the host's files (modes are set here: git keeps only the x bit)
  cmd/             recorded command outputs
  commands.toml    command line -> file in cmd/ (or a table: returncode, stdout, stderr)
  settings.toml    sbtc-ops.toml; {root} is replaced by the copied tree's path
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sbtc_ops.audit.framework import (
    AuditReport,
    CommandResult,
    HostContext,
    RecordedRunner,
    run_audit,
    select_checks,
)
from sbtc_ops.config import Settings
from sbtc_ops.discover.load import load_settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "audit"
# The one "today" of every audit test (support/audit2.py uses it too): rotation dates, backup
# and log ages, release dates of the fake GitHub and the fixtures' files are relative to it.
FIXTURE_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass
class Scenario:
    name: str
    root: Path
    settings_file: Path
    state_dir: Path
    outputs: dict[str, str | CommandResult]

    def settings(self, **extra: object) -> Settings:
        return load_settings(config_path=self.settings_file, environ={}, overrides=extra)

    def runner(self) -> RecordedRunner:
        return RecordedRunner(self.outputs)

    def context(self, settings: Settings | None = None) -> HostContext:
        return HostContext(
            settings or self.settings(), root=self.root, runner=self.runner(), now=FIXTURE_NOW
        )

    def audit(self, *areas: str, settings: Settings | None = None) -> AuditReport:
        return run_audit(self.context(settings), select_checks(areas))


def statuses(report: AuditReport) -> dict[str, str]:
    return {finding.id: finding.status.value for finding in report.findings}


def load_scenario(name: str, workdir: Path, modes: dict[str, int] | None = None) -> Scenario:
    source = FIXTURES / name
    root = workdir / "root"
    shutil.copytree(source / "root", root, symlinks=True)
    for directory, dirs, files in os.walk(root):
        for entry in dirs:
            os.chmod(os.path.join(directory, entry), 0o755)  # noqa: S103 - a usual host dir
        for entry in files:
            os.chmod(os.path.join(directory, entry), 0o644)
    for relative, mode in (modes or {}).items():
        os.chmod(root / relative, mode)
    state_dir = workdir / "state"
    settings_text = (source / "settings.toml").read_text().replace("{root}", str(root))
    settings_file = workdir / "sbtc-ops.toml"
    settings_file.write_text(f'state_dir = "{state_dir}"\n{settings_text}')
    return Scenario(name, root, settings_file, state_dir, _outputs(source))


def _outputs(source: Path) -> dict[str, str | CommandResult]:
    index = source / "commands.toml"
    if not index.exists():
        return {}
    outputs: dict[str, str | CommandResult] = {}
    for command, value in tomllib.loads(index.read_text()).items():
        argv = tuple(command.split(" "))
        if isinstance(value, str):
            outputs[command] = (source / "cmd" / value).read_text()
        else:
            outputs[command] = CommandResult(
                argv,
                int(value.get("returncode", 0)),
                str(value.get("stdout", "")),
                str(value.get("stderr", "")),
            )
    return outputs
