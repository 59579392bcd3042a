"""Helpers for the audit II tests: run one area against settings, a tree and a runner."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sbtc_ops.audit.framework import (
    CommandResult,
    Finding,
    HostContext,
    RecordedRunner,
    run_audit,
    select_checks,
)
from sbtc_ops.backup.manifest import MANIFEST_NAME, Manifest, SourceInfo
from sbtc_ops.config import Settings
from sbtc_ops.results import Status
from tests.support.audit import FIXTURE_NOW

NOW = FIXTURE_NOW  # the audit tests share one fixed "now" (a Tuesday)


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    doc: dict[str, Any] = {"state_dir": str(tmp_path / "state")}
    doc.update(sections)
    audit = dict(doc.get("audit") or {})
    audit.setdefault("network_timeout_s", 2.0)
    audit.setdefault("metrics_interval_s", 0.2)
    doc["audit"] = audit
    return Settings.model_validate(doc)


def run_area(
    area: str,
    settings: Settings,
    *,
    root: Path,
    outputs: Mapping[str, str | CommandResult] | None = None,
    now: datetime = NOW,
) -> dict[str, Finding]:
    runner = RecordedRunner(dict(outputs or {}))
    ctx = HostContext(settings, root=root, runner=runner, now=now)
    report = run_audit(ctx, select_checks([area]))
    return {finding.id: finding for finding in report.findings}


def statuses(findings: Mapping[str, Finding]) -> dict[str, str]:
    return {check_id: finding.status.value for check_id, finding in findings.items()}


def ids_with(findings: Mapping[str, Finding], status: Status) -> list[str]:
    return sorted(i for i, f in findings.items() if f.status is status)


def write(root: Path, path: str, text: str) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def store_backup(directory: Path, backup_id: str, key: str | None, complete: bool = True) -> None:
    folder = directory / (backup_id if complete else f"{backup_id}.partial")
    folder.mkdir(parents=True)
    manifest = Manifest(
        id=backup_id,
        started_at="2026-11-24T00:00:00Z",
        ended_at="2026-11-24T00:01:00Z",
        duration_s=60.0,
        source=SourceInfo(),
        server_version="16.4",
        pg_dump_version="18.0",
        format="custom",
        compression="gzip:1",
        files=[],
        total_size=0,
        rows={},
        migrations=[],
        newest_verified_aggregate_key=key,
        network="mainnet",
        deployer="SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4",
        sbtc_ops_version="0.1.0",
    )
    if complete:
        (folder / MANIFEST_NAME).write_bytes(manifest.to_bytes())
