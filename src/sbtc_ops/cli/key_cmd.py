"""`sbtc-ops key check | backup | verify-backup`: custody of the signer's private key.

Only the public key is ever printed. Passphrases come from the terminal without echo or from
a file descriptor (`--passphrase-fd N`), never from argv or the environment.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError
from sbtc_ops.render import CheckLine, render_checks, status_summary
from sbtc_ops.results import Status

if TYPE_CHECKING:  # the key modules (and the Stacks client they use) load when a command runs
    from sbtc_ops.keys.backup import BackupReport, Method
    from sbtc_ops.keys.service import CheckReport
    from sbtc_ops.keys.verify import VerifyReport

key_app = typer.Typer(
    help="Custody of the signer's private key: check it, back it up cold, prove the backup.",
    no_args_is_help=True,
)


KEY_FILE_OPTION = typer.Option(
    "--key-file",
    help="A file holding the signer's private key (64 hex, or 66 ending in 01). "
    "Default: where the signer gets it (its config, env file or environment).",
)
PASSPHRASE_FD_OPTION = typer.Option(
    "--passphrase-fd",
    metavar="N",
    help="Read the passphrase (one line) from file descriptor N instead of the terminal.",
)
OFFLINE_OPTION = typer.Option("--offline", help="Do not ask any Stacks node.")


@key_app.command("check")
def check(
    key_file: Annotated[Path | None, KEY_FILE_OPTION] = None,
    offline: Annotated[bool, OFFLINE_OPTION] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Check the key: file mode and owner, signer sets, not a public test key, cold backup age."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.keys.service import check_key

    report = check_key(_common.load_settings(), key_file=key_file, offline=offline)
    if json_output:
        _common.emit_json(report.to_json())
    else:
        _render_check(report)
    if not report.ok:
        raise typer.Exit(1)


def _render_check(report: CheckReport) -> None:
    out = _common.out
    out.print(f"public key  {report.public_key}", markup=False)
    out.print(f"source      {report.source}\n", markup=False)
    lines = [CheckLine(r.status, r.id, r.detail, r.remediation) for r in report.results]
    render_checks(out, [(None, lines)])
    out.print("\n" + status_summary(r.status for r in report.results), markup=False)


@key_app.command("backup")
def backup(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the backup (created 0700).")
    ],
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Encrypt with age to a passphrase (scrypt).")
    ] = False,
    recipients: Annotated[
        list[str] | None,
        typer.Option(
            "--recipient",
            metavar="AGE_PUBKEY",
            help="Encrypt with age to this X25519 public key (age1…); repeatable.",
        ),
    ] = None,
    shares: Annotated[
        int | None, typer.Option("--shares", metavar="N", help="Split into N SLIP-39 shares.")
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", metavar="K", help="Any K shares restore the key (K ≥ 2)."),
    ] = None,
    passphrase_fd: Annotated[int | None, PASSPHRASE_FD_OPTION] = None,
    key_file: Annotated[Path | None, KEY_FILE_OPTION] = None,
    key_fd: Annotated[
        int | None,
        typer.Option(
            "--key-fd", metavar="N", help="Read the private key (one line) from descriptor N."
        ),
    ] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Write an offline cold backup of the key: age (passphrase or recipients) or SLIP-39 shares."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.keys.backup import BackupRequest
    from sbtc_ops.keys.secretio import get_passphrase
    from sbtc_ops.keys.service import backup_key

    request = BackupRequest(
        method=_method(
            passphrase or passphrase_fd is not None, recipients or [], shares, threshold
        ),
        recipients=tuple(recipients or ()),
        shares=shares,
        threshold=threshold,
    )
    report = backup_key(
        _common.load_settings(),
        out_dir,
        request,
        key_file=key_file,
        key_fd=key_fd,
        passphrase=lambda: get_passphrase(
            passphrase_fd, confirm=True, prompt="Passphrase for the cold backup: "
        ),
    )
    if json_output:
        _common.emit_json({"ok": True, **report.to_json()})
    else:
        _render_backup(report)


def _method(
    passphrase: bool, recipients: list[str], shares: int | None, threshold: int | None
) -> Method:
    chosen: list[Method] = []
    if passphrase:
        chosen.append("age-passphrase")
    if recipients:
        chosen.append("age-recipients")
    if shares is not None or threshold is not None:
        chosen.append("slip39")
    if len(chosen) != 1:
        raise UsageError(
            "choose one kind of backup: --passphrase, --recipient AGE_PUBKEY…, "
            "or --shares N --threshold K"
        )
    return chosen[0]


def _render_backup(report: BackupReport) -> None:
    out = _common.out
    out.print(f"public key  {report.public_key}", markup=False)
    out.print(f"method      {report.method}", markup=False)
    out.print(f"created     {report.created_at}\n", markup=False)
    for item in report.files:
        out.print(f"  {item.path}  ({item.role}, mode {item.mode:04o})", markup=False)
    if report.read_back:
        out.print("\nRead back from disk: it restores the same public key.", markup=False)
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    out.print(
        "\nNext: move the files to offline storage (see docs/key-custody.md), then prove them "
        "with `sbtc-ops key verify-backup FILE…`.",
        markup=False,
    )


@key_app.command("verify-backup")
def verify_backup(
    files: Annotated[
        list[Path], typer.Argument(help="Backup files: age files, or the SLIP-39 share files.")
    ],
    passphrase_fd: Annotated[int | None, PASSPHRASE_FD_OPTION] = None,
    identities: Annotated[
        list[Path] | None,
        typer.Option(
            "--identity",
            metavar="IDENTITY_FILE",
            help="age identity file for backups encrypted to recipients; repeatable.",
        ),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            metavar="HEX",
            help="The signer's public key, when this host has no signer configuration.",
        ),
    ] = None,
    key_file: Annotated[Path | None, KEY_FILE_OPTION] = None,
    offline: Annotated[bool, OFFLINE_OPTION] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Restore backups in memory and prove they hold the signer's key; records the date."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.keys.secretio import get_passphrase
    from sbtc_ops.keys.service import verify_key_backups
    from sbtc_ops.keys.verify import Secrets

    secrets = Secrets(
        passphrase=lambda: get_passphrase(
            passphrase_fd, confirm=False, prompt="Passphrase of the cold backup: "
        ),
        identity_files=list(identities or []),
    )
    report = verify_key_backups(
        _common.load_settings(),
        files,
        secrets,
        public_key=public_key,
        key_file=key_file,
        offline=offline,
    )
    if json_output:
        _common.emit_json(report.to_json())
    else:
        _render_verify(report)
    if not report.ok:
        raise typer.Exit(1)


def _render_verify(report: VerifyReport) -> None:
    out = _common.out
    expected = report.expected.public_key or "any key of the on-chain signer set"
    out.print(f"expected    {expected} ({report.expected.basis})\n", markup=False)
    for verdict in report.verdicts:
        style = "green" if verdict.ok else "bold red"
        mark = Status.PASS.symbol if verdict.ok else Status.FAIL.symbol
        names = ", ".join(str(path) for path in verdict.files)
        out.print(
            f"  [{style}]{mark} {escape(verdict.outcome)}[/]  {escape(verdict.method)}  "
            f"{escape(names)}"
        )
        out.print(f"      {escape(verdict.detail)}")
    for path in report.skipped:
        out.print(f"  - skipped {escape(str(path))} (sidecar metadata, not a backup)")
    if report.ok:
        out.print("\nThe backup restores the signer's key; the verification is recorded.")
    else:
        out.print("\n[bold red]The backup does not prove the key.[/] The attempt is recorded.")


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
