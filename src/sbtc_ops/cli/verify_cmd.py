"""`sbtc-ops verify`: the automated restore drill.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError
from sbtc_ops.history import JobName, JobOutcome, recorded_cli_run

if TYPE_CHECKING:
    from sbtc_ops.verify.report import VerifyReport

log = logging.getLogger(__name__)


class BackupKind(StrEnum):
    FULL = "full"
    DKG_ONLY = "dkg-only"


def _parse_key_hex(text: str) -> bytes:
    cleaned = text.strip().lower().removeprefix("0x")
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError(f"--expected-key {text!r} is not hex") from None
    if len(key) != 33 or key[0] not in (2, 3):
        raise UsageError("--expected-key must be a 33-byte compressed public key (66 hex digits)")
    return key


def _read_signer_secret(path: Path) -> bytes:
    from sbtc_ops.keys.material import KeySource, parse_private_key, read_key_text, zero

    text = read_key_text(path, f"--signer-key-file {path}")
    try:
        with parse_private_key(
            text, KeySource("key-file", f"--signer-key-file {path}", path)
        ) as key:
            return key.secret_bytes()
    finally:
        zero(text)


def verify(
    backup: Annotated[
        str | None,
        typer.Argument(metavar="[BACKUP]", help="Backup id, or a path to any pg_dump output."),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Verify the newest backup (of --kind).")
    ] = False,
    kind: Annotated[
        BackupKind,
        typer.Option(
            "--kind",
            help="With --latest: the newest full backup, or the newest DKG-only export.",
            case_sensitive=False,
        ),
    ] = BackupKind.FULL,
    expected_key: Annotated[
        str | None,
        typer.Option("--expected-key", help="Compare with this key instead of reading the chain."),
    ] = None,
    stacks_url: Annotated[
        list[str] | None, typer.Option("--stacks-url", help="Stacks node RPC URL (repeatable).")
    ] = None,
    signer_key_file: Annotated[
        Path | None,
        typer.Option(
            "--signer-key-file",
            help="Also decrypt the DKG shares with this key (offline hosts only).",
        ),
    ] = None,
    identity: Annotated[
        Path | None, typer.Option("--identity", help="age identity for encrypted backups.")
    ] = None,
    repo: Annotated[
        list[str] | None, typer.Option("--repo", help="Backup location(s) to look the id up in.")
    ] = None,
    to: Annotated[list[str] | None, _common.DEPRECATED_TO_OPTION] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="mainnet, testnet or devnet.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", help="Parallel restore jobs.", show_default="verify.jobs (2)"),
    ] = None,
    keep_cluster: Annotated[
        bool, typer.Option("--keep-cluster", help="Leave the throwaway cluster running.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write a self-contained HTML report to sign off (mode 0600).",
        ),
    ] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Restore a backup into a throwaway PostgreSQL and prove it holds the on-chain key."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.verify.drill import VerifyRequest, run_verify
    from sbtc_ops.verify.render import PhaseSpinner, render_terminal

    _check_usage(backup, latest, kind)
    settings = _common.load_settings(
        network=network,
        stacks={"endpoints": stacks_url or None},
        backup={"identity_file": identity},
    )
    request = VerifyRequest(
        backup_ref=backup,
        latest=latest,
        kind=kind.value,
        expected_key=_parse_key_hex(expected_key) if expected_key else None,
        stacks_urls=stacks_url or None,
        signer_secret=_read_signer_secret(signer_key_file) if signer_key_file else None,
        keep_cluster=keep_cluster,
        locations=_common.repositories(repo, to),
        jobs=jobs or settings.verify.jobs,
    )
    with recorded_cli_run(settings.state_dir, JobName.VERIFY) as run, PhaseSpinner() as spinner:
        report = run_verify(settings, request, phase=spinner.update)
        run.finished(*_history_entry(report))
    if html is not None:
        from sbtc_ops.verify.html import write_html

        write_html(report, html)
    if json_output:
        _common.emit_json(report.to_json())
    else:
        render_terminal(report, _common.out)
    if report.ok:
        return
    raise typer.Exit(2 if report.could_not_run else 1)


def _check_usage(backup: str | None, latest: bool, kind: BackupKind) -> None:
    if backup is None and not latest:
        raise UsageError("name a BACKUP (id or path) or pass --latest")
    if kind != BackupKind.FULL and not latest:
        raise UsageError(
            "--kind chooses what --latest picks; a BACKUP named by id has its own kind"
        )


def _history_entry(report: VerifyReport) -> tuple[str, str, dict[str, Any]]:
    """`history` lists verify runs made from the command line too."""
    outcome = (
        JobOutcome.OK
        if report.ok
        else JobOutcome.ERROR
        if report.could_not_run
        else JobOutcome.PROBLEM
    )
    data = {"backup": report.backup, "verdict": report.verdict, "key_source": report.key_source}
    return outcome, _summary(report), data


def _summary(report: VerifyReport) -> str:
    failed = [c.id for c in report.checks if c.status.is_problem]
    text = f"{report.backup}: {report.verdict}"
    if report.expected_aggregate_key is not None:
        text += f" against the {report.key_source} key"
    return text + (f" ({', '.join(failed)} failed)" if failed else "")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
