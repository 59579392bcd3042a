"""`sbtc-ops backup`, `backups`, `prune`, `restore`.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common
from sbtc_ops.history import JobName, JobOutcome, recorded_cli_run
from sbtc_ops.render import format_size


def backup(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Signer database URL (default: the config's db_endpoint)."),
    ] = None,
    repo: Annotated[list[str] | None, _common.BACKUP_REPO_OPTION] = None,
    dump_format: Annotated[
        str | None, typer.Option("--format", help="custom (default) or directory.")
    ] = None,
    compression: Annotated[
        str | None,
        typer.Option(
            "--compress",
            help="pg_dump compression, e.g. zstd:1, gzip:6.",
            show_default="backup.compression, gzip:1",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", help="Parallel dump jobs (directory format).", show_default="backup.jobs, 2"
        ),
    ] = None,
    recipient: Annotated[
        list[str] | None, typer.Option("--recipient", help="age recipient (age1…), repeatable.")
    ] = None,
    dkg_only: Annotated[
        bool, typer.Option("--dkg-only", help="Only the DKG key shares and migrations (a few KiB).")
    ] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Take a consistent, checksummed (optionally encrypted) backup of the signer database."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.backup.service import request_from_settings, run_backup

    settings = _common.load_settings(
        db={"url": db},
        backup={
            "format": dump_format,
            "compression": compression,
            "jobs": jobs,
            "recipients": recipient or None,
        },
    )
    request = request_from_settings(settings, repo or None, dkg_only=dkg_only)
    # `history --job backup` lists backups taken from the command line too.
    with recorded_cli_run(settings.state_dir, JobName.BACKUP, {"kind": request.kind}) as run:
        outcome = run_backup(settings, request)
        manifest = outcome.manifest
        run.finished(
            JobOutcome.PROBLEM if outcome.failed else JobOutcome.OK,
            f"{manifest.id}: {manifest.kind}, {format_size(manifest.total_size)}",
            {"backup": manifest.id, "kind": manifest.kind, "size": manifest.total_size},
        )
    failed = [{"location": name, "error": why} for name, why in outcome.failed.items()]
    if json_output:
        _common.emit_json(
            {
                "ok": not failed,
                "backup": manifest.model_dump(mode="json"),
                "locations": outcome.locations,
                "failed_locations": failed,
            }
        )
    else:
        _print_backup(outcome)
    for entry in failed:
        _common.print_error(f"{entry['error']}; the backup was not stored there")
    if failed:
        raise typer.Exit(1)  # stored, but not everywhere: a problem found


def _print_backup(outcome: Any) -> None:
    manifest = outcome.manifest
    out = _common.out
    out.print(f"backup {manifest.id} complete ({manifest.kind})", markup=False)
    out.print(
        f"  size        {format_size(manifest.total_size)} in {len(manifest.files)} file(s)",
        markup=False,
    )
    out.print(f"  duration    {manifest.duration_s:.1f} s", markup=False)
    key = manifest.newest_verified_aggregate_key or "none (no verified DKG round yet)"
    out.print(f"  newest key  {key}", markup=False)
    out.print(f"  encrypted   {'yes (age)' if manifest.encrypted else 'no'}", markup=False)
    for location in outcome.locations:
        out.print(f"  stored at   {location}", markup=False)
    for location in outcome.failed:
        out.print(f"  NOT stored  {location}", markup=False)


def backups(
    repo: Annotated[list[str] | None, _common.REPO_OPTION] = None,
    to: Annotated[list[str] | None, _common.DEPRECATED_TO_OPTION] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """List backups in every configured location, with their state."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.attest.service import evidence_reader
    from sbtc_ops.backup.service import survey

    settings = _common.load_settings()
    evidence = evidence_reader(settings.state_dir, settings.attest.allowed_signers)
    found = survey(settings, _common.repositories(repo, to), evidence=evidence)
    rows = found.rows
    unreachable = [{"location": k, "error": v} for k, v in found.unreachable.items()]
    if json_output:
        _common.emit_json({"ok": not unreachable, "backups": rows, "unreachable": unreachable})
    else:
        _print_backups(rows)
    for entry in unreachable:
        _common.print_error(f"{entry['error']}; its backups are not listed")
    if unreachable:
        raise typer.Exit(1)  # the others were listed; this one is a problem found


def _print_backups(rows: list[dict[str, Any]]) -> None:
    if not rows:
        _common.out.print("no backups found", markup=False)
        return
    table = _rich_table(("id", "kind", "age", "size", "state", "signed drill", "location"))
    invalid = [row for row in rows if row["state"] == "invalid"]
    for row in rows:
        evidence = row["attestation"]
        signed = f"yes ({evidence['signatures']} sig)" if evidence["signed_match"] else "no"
        cells = (
            row["id"], row["kind"] or "-", row["age"], format_size(row["size"]), row["state"],
            signed, row["location"],
        )  # fmt: skip
        table.add_row(*(_common.cell(value) for value in cells))
    _common.out.print(table)
    for row in invalid:
        _common.err.print(f"warning: backup {row['id']} is invalid: {row['reason']}", markup=False)


def prune(
    repo: Annotated[list[str] | None, _common.REPO_OPTION] = None,
    to: Annotated[list[str] | None, _common.DEPRECATED_TO_OPTION] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, delete nothing.")] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Apply the retention policy (keep N daily, weekly, monthly) to every location."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.backup.service import prune_all

    settings = _common.load_settings()
    report = prune_all(settings, _common.repositories(repo, to), dry_run=dry_run)
    failed = [location for location in report if location.get("error")]
    if json_output:
        _common.emit_json({"ok": not failed, "dry_run": dry_run, "locations": report})
    else:
        _print_pruned(report, dry_run)
    for location in failed:
        _common.print_error(f"{location['error']}; nothing was deleted there")
    if failed:
        raise typer.Exit(1)  # the others were pruned; this one is a problem found


def _print_pruned(report: list[dict[str, Any]], dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for location in report:
        if location.get("error"):
            continue
        _common.out.print(f"{location['location']}:", markup=False)
        for decision in location["decisions"]:
            action = "keep" if decision["action"] == "keep" else verb
            reasons = "; ".join(decision["reasons"])
            _common.out.print(f"  {action:<12} {decision['id']:<24} {reasons}", markup=False)
        for key in location["abandoned_uploads"]:
            _common.out.print(f"  {verb} unfinished upload {key}", markup=False)
        for backup_id in location["skipped_in_use"]:
            _common.out.print(
                f"  note: {backup_id} is in use by a running verify or restore: kept this "
                "time, the next prune applies the policy to it",
                markup=False,
            )
        _common.out.print(f"  kept {len(location['kept'])} backup(s)", markup=False)


def restore(
    backup_ref: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id or path.")],
    target_db: Annotated[
        str, typer.Option("--target-db", help="URL of the database to restore into.")
    ],
    repo: Annotated[list[str] | None, _common.REPO_OPTION] = None,
    to: Annotated[list[str] | None, _common.DEPRECATED_TO_OPTION] = None,
    identity: Annotated[
        Path | None, typer.Option("--identity", help="age identity file for encrypted backups.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Restore into a database that is not empty (beside what is there)."
        ),
    ] = False,
    create: Annotated[
        bool, typer.Option("--create", help="Create the target database if it does not exist.")
    ] = False,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Drop the objects the backup contains from the target first (one transaction).",
        ),
    ] = False,
    overwrite_live: Annotated[
        str | None,
        typer.Option(
            "--overwrite-live-db",
            metavar="DBNAME",
            help="Allow restoring into the live signer database; must repeat its name.",
        ),
    ] = None,
    force_unverified: Annotated[
        bool,
        typer.Option(
            "--force-unverified",
            help="Restore even when the drill cannot prove the backup's schema identical to "
            "the signer's (dangerous; recorded).",
        ),
    ] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Disaster recovery: the backup is first restored in a throwaway sandbox and its whole
    schema compared with the signer's (as `verify` does); only a proven backup is then
    restored into the database you name, without owners, privileges or settings."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.backup.restore import RestoreRequest
    from sbtc_ops.verify.gate import run_gated_restore

    settings = _common.load_settings(backup={"identity_file": identity})
    result = run_gated_restore(
        settings,
        RestoreRequest(
            backup_ref,
            target_db,
            _common.repositories(repo, to),
            force,
            overwrite_live,
            create=create,
            clean=clean,
        ),
        force_unverified=force_unverified,
        jobs=settings.verify.jobs,
    )
    if result["refused"]:
        if json_output:
            _common.emit_json(result)
        else:
            _print_refused(result)
        raise typer.Exit(1)
    # Restored, but not the rows the backup recorded (or unverified): a problem (exit 1).
    intact = result["summary"]["rows_match_manifest"] is not False
    ok = intact and not result["forced_unverified"]
    if json_output:
        _common.emit_json({**result, "ok": ok})
    else:
        _print_restored(result)
    if not ok:
        raise typer.Exit(1)


def _print_refused(result: dict[str, Any]) -> None:
    from sbtc_ops.pg.schema_identity import escape

    _common.print_error(
        f"backup {escape(result['backup'])} is not proven safe to restore; nothing was "
        "written to the target"
    )
    for problem in result["identity"]["problems"][:10]:
        _common.err.print(f"  {escape(problem, 400)}", markup=False, highlight=False)
    _common.err.print(
        "  verify it (`sbtc-ops verify`) for the full report; pin the live schema if it is "
        "unknown (`sbtc-ops schema pin`); --force-unverified restores it anyway (recorded)",
        markup=False,
    )


def _print_restored(result: dict[str, Any]) -> None:
    out = _common.out
    how = []
    if result["created"]:
        how.append("created the database")
    if result["cleaned"]:
        how.append("replaced the backup's objects")
    if result["single_transaction"]:
        how.append("one transaction")
    note = f" ({', '.join(how)})" if how else ""
    out.print(
        f"restored {result['backup']} into {result['target']} in "
        f"{result['duration_s']:.1f} s{note}",
        markup=False,
    )
    summary = result["summary"]
    match = {True: ", as the manifest recorded", False: ", NOT as the manifest recorded"}
    out.print(
        f"  tables      {summary['tables']} ({summary['rows']} rows"
        f"{match.get(summary['rows_match_manifest'], '')})",
        markup=False,
    )
    if summary["rows_differ"]:
        out.print(f"  differ      {', '.join(summary['rows_differ'])}", markup=False)
    out.print(f"  newest DKG  {summary['newest_dkg_key'] or 'none'}", markup=False)
    out.print(f"  verified    {summary['newest_verified_dkg_key'] or 'none'}", markup=False)
    if result["forced_unverified"]:
        out.print("  schema      NOT VERIFIED (--force-unverified; recorded)", markup=False)
    else:
        out.print("  schema      identical to the signer's (checked in the sandbox)", markup=False)
    out.print(f"  note        {result['not_restored']}", markup=False)


def _rich_table(columns: tuple[str, ...]) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("backups")(backups)
    app.command("prune")(prune)
    app.command("restore")(restore)
