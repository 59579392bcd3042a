"""`sbtc-ops restore` behind the restore gate: a backup is restored only once the drill has
proven it (docs/threat-model.md, "The restore gate").

The drill restores the archive into its throwaway cluster (sandbox, unprivileged restore
role) and compares the whole schema with the reference of its migration level. Only then,
from the same checked bytes, is the target written: custom, directory and tar archives with
pg_restore --no-owner --no-privileges; a plain SQL dump is never replayed against the target
(its ALTER … OWNER, GRANT, SET SESSION AUTHORIZATION, ALTER ROLE/DATABASE and DO blocks
would run there): the database the drill restored is dumped again, in the sandbox, as a
custom archive, and that is what pg_restore writes. A backup that is not proven is refused
(exit 1, the target untouched) unless --force-unverified, which is recorded.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sbtc_ops.backup.archive import PreparedArchive
from sbtc_ops.backup.restore import ProvenArchive, RestoreRequest, preflight, restore_prepared
from sbtc_ops.backup.source import ConnectionTarget
from sbtc_ops.config import Settings
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.files import PRIVATE_FILE_MODE
from sbtc_ops.progress import echo
from sbtc_ops.results import Status
from sbtc_ops.state import EventKind, StateStore
from sbtc_ops.verify.drill import (
    AMCHECK_SCHEMA,
    GATE_CHECKS,
    READER_ROLE,
    RESTORED_DB,
    GateContext,
    VerifyRequest,
    run_verify,
)

NOT_RESTORED = (
    "owners, privileges, and database and role settings were not restored (pg_restore "
    "--no-owner --no-privileges; a plain SQL dump is replayed only in the drill's sandbox and "
    "re-dumped): grant the signer's role what it needs on the target"
)
REDUMP_NAME = "proven.dump"


def run_gated_restore(
    settings: Settings, request: RestoreRequest, *, force_unverified: bool, jobs: int
) -> dict[str, Any]:
    """The restore command: drill first, then the target. The result's `refused` says the
    gate stopped it (nothing written)."""
    gate = _Gate(settings, request, preflight(settings, request), force_unverified)
    drill = VerifyRequest(request.backup_ref, locations=request.locations, jobs=jobs, gate=gate)
    report = run_verify(settings, drill)
    if gate.problems is None:
        _not_restored_in_sandbox(report.backup, report.checks)
    problems = gate.problems or []
    restored = gate.restored
    verified = not problems
    _record(settings, report.backup, restored is not None, problems, force_unverified)
    identity = {
        "verified": verified,
        "problems": problems,
        "checks": [c.to_json() for c in report.checks if c.id in GATE_CHECKS],
    }
    if restored is None:
        return {"ok": False, "refused": True, "backup": report.backup, "identity": identity}
    return {
        "ok": True,
        "refused": False,
        **restored,
        "identity": identity,
        "forced_unverified": not verified,
        "not_restored": NOT_RESTORED,
    }


@dataclass
class _Gate:
    """Called by the drill while its cluster still holds the restored archive: writes the
    target when the archive is proven (or --force-unverified)."""

    settings: Settings
    request: RestoreRequest
    target: ConnectionTarget
    force_unverified: bool
    problems: list[str] | None = None  # None: the drill never reached the gate
    restored: dict[str, Any] | None = None

    def __call__(self, ctx: GateContext) -> None:
        self.problems = _gate_problems(ctx)
        if self.problems and not self.force_unverified:
            return
        if self.problems:
            _warn_unverified(self.problems)
        archive = ctx.prepared
        version = ctx.located.manifest.pg_dump_version if ctx.located.manifest else None
        if archive.format == "plain":
            archive = _redump(ctx)
            version = ctx.cluster.binaries.version
        manifest = ctx.located.manifest
        proven = ProvenArchive(
            archive,
            backup=ctx.located.backup_id or ctx.located.ref,
            expected_rows=manifest.rows if manifest else None,
            dump_version=version,
        )
        self.restored = restore_prepared(self.settings, self.request, self.target, proven)


def _gate_problems(ctx: GateContext) -> list[str]:
    found = [ctx.results.get(check) for check in GATE_CHECKS]
    return [
        f"{check}: {result.detail if result else 'not run'}"
        for check, result in zip(GATE_CHECKS, found, strict=True)
        if result is None or result.status != Status.PASS
    ]


def _not_restored_in_sandbox(backup: str, checks: list[Any]) -> None:
    """The archive failed before the drill could restore it (checksum, decryption, format):
    nothing was restored anywhere; say why (exit 2, as before the gate)."""
    checksum = next((c for c in checks if c.id == "archive.checksum"), None)
    if checksum is not None and checksum.status.is_problem:
        raise SbtcOpsError(
            f"backup {backup} fails its checksum, nothing was restored: {checksum.detail}"
        )
    failed = next((c for c in checks if c.status.is_problem), None)
    detail = failed.detail if failed is not None else "the archive could not be restored"
    raise SbtcOpsError(f"backup {backup} cannot be restored: {detail}; nothing was restored")


def _warn_unverified(problems: list[str]) -> None:
    echo(
        "WARNING: --force-unverified: restoring a backup whose schema is NOT proven identical "
        "to the signer's (" + "; ".join(problems[:3]) + "). Functions, triggers, policies or "
        "defaults in it may run attacker code as whoever uses the target database. This is "
        "recorded in sbtc-ops' state."
    )


def _redump(ctx: GateContext) -> PreparedArchive:
    """The database the drill restored, dumped again as a custom archive in the sandbox, by
    the reader role (no power beyond reading), next to the staged archive."""
    cluster = ctx.cluster
    output = ctx.prepared.path.parent / REDUMP_NAME
    argv = [
        str(cluster.binaries.pg_dump),
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--no-password",
        # The drill's own amcheck, installed before the restore: not the backup's.
        f"--exclude-schema={AMCHECK_SCHEMA}",
        "--exclude-extension=amcheck",
        RESTORED_DB,
    ]
    with output.open("xb") as sink:
        output.chmod(PRIVATE_FILE_MODE)
        proc = cluster.sandbox.popen(
            argv,
            env=cluster.client_env(READER_ROLE),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.PIPE,
        )
        with cluster.sandbox.reaped(proc):
            _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()[:1]
        raise SbtcOpsError(
            "re-dumping the plain SQL backup from the drill's sandbox failed: "
            + (message[0][:300] if message else f"exit {proc.returncode}")
            + "; nothing was restored"
        )
    steps = [*ctx.prepared.steps, "replayed in the sandbox and re-dumped (custom)"]
    return replace(ctx.prepared, path=Path(output), format="custom", steps=steps)


def _record(
    settings: Settings, backup: str, restored: bool, problems: list[str], forced: bool
) -> None:
    outcome = "refused" if not restored else "restored-unverified" if problems else "restored"
    with StateStore.open(settings.state_dir) as store:
        store.record_event(
            EventKind.RESTORE,
            backup,
            outcome,
            {"problems": problems[:20], "force_unverified": forced},
        )
