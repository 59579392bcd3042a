"""`sbtc-ops attest verify` / `attest sign`: check drill attestations, add a co-signature.

Exit codes of `attest verify`: 0 every statement is signed by an allowed key and its archive
digests match the repository; 1 a statement is unsigned, a signature does not verify, or a
digest differs (tampered); 2 cannot check (no allowed-signers file, no ssh-keygen, a location
unreachable, no such backup).

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError

attest_app = typer.Typer(
    help="Signed drill attestations: verify them, co-sign one (four eyes).",
    no_args_is_help=True,
)


@attest_app.command("verify")
def verify(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET", help="A backup id, or one statement file (*.intoto.json)."
        ),
    ],
    allowed_signers: Annotated[
        Path | None,
        typer.Option(
            "--allowed-signers",
            help="OpenSSH allowed-signers file (default: attest.allowed_signers).",
        ),
    ] = None,
    repo: Annotated[
        list[str] | None,
        typer.Option(
            "--repo", help="Backup location(s) to look the id up in (default: the config)."
        ),
    ] = None,
    to: Annotated[list[str] | None, _common.DEPRECATED_TO_OPTION] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Check every signature of a backup's drill attestations and recompute its digests."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.attest.service import verify_target
    from sbtc_ops.backup.service import storages_for

    settings = _common.load_settings()
    allowed = allowed_signers or settings.attest.allowed_signers
    if allowed is None:
        raise UsageError("name the allowed-signers file (--allowed-signers FILE)")
    # A statement file is checked against the backup directory it lies in.
    storages = (
        [] if Path(target).is_file() else storages_for(settings, _common.repositories(repo, to))
    )
    report = verify_target(target, allowed, storages)
    if json_output:
        _common.emit_json(report.to_json())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(1)


def _render(report: object) -> None:
    from sbtc_ops.attest.service import VerifyAttestationsReport

    assert isinstance(report, VerifyAttestationsReport)
    out = _common.out
    if not report.statements:
        out.print(f"{report.target}: no drill attestation found (unsigned)", markup=False)
        return
    for item in report.statements:
        doc = item.to_json()
        signers = ", ".join(doc["signers"]) or "nobody (unsigned)"
        state = "TAMPERED" if item.tampered else "ok" if item.signed else "UNSIGNED"
        out.print(
            f"{state}: {item.location}/{item.name}\n"
            f"  verdict {doc.get('verdict')} on {doc.get('finished_at')} by host {doc.get('host')}"
            f"\n  on-chain key {doc.get('onchain_key')} ({doc.get('key_source')}), tip "
            f"{doc.get('tip')}\n  signed by: {signers}",
            markup=False,
        )
        for signature in item.signatures:
            mark = "good" if signature.valid else "BAD"
            out.print(f"  {mark}: {signature.file}: {signature.message}", markup=False)
        for problem in item.problems:
            out.print(f"  problem: {problem}", markup=False)


@attest_app.command("sign")
def sign(
    statement_file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="The statement (*.intoto.json) you reviewed."),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Your SSH key: a private key file, or the .pub of an ssh-agent or FIDO key "
            "(default: attest.signing_key).",
        ),
    ] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Add your signature to a drill statement after review (kept as its own file)."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.attest.service import cosign, record_cosignature

    settings = _common.load_settings()
    signing_key = key or settings.attest.signing_key
    if signing_key is None:
        raise UsageError("name your signing key (--key FILE)")
    written = cosign(statement_file, signing_key)
    backup_id = statement_file.resolve().parent.parent.name
    record_cosignature(settings.state_dir, backup_id, statement_file.name, written)
    if json_output:
        _common.emit_json({"ok": True, "signature": written})
    else:
        _common.out.print(f"co-signature written: {written}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(attest_app, name="attest")
