"""`sbtc-ops upgrade-check`: a verified backup and a go/no-go before changing the signer image.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common


def upgrade_check(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Target release (v1.3.3) or image (ghcr.io/stacks-sbtc/sbtc:signer-v1.3.3).",
        ),
    ],
    from_version: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Running release, when neither the image nor the database's applied "
            "migrations tell it.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan only: no backup, no go/no-go (exit 1 if the plan has a "
            "blocking problem).",
        ),
    ] = False,
    plan_only: Annotated[
        bool, typer.Option("--plan-only", hidden=True, help="Deprecated: use --dry-run.")
    ] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Back up and verify now, then report what the target release does to the database and
    the configuration, the incidents it fixes, go/no-go and the rollback command."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.signer.upgrade import run_upgrade_check
    from sbtc_ops.verify.fresh import prove_fresh_backup

    if plan_only:
        _common.deprecated_spelling("--plan-only", "--dry-run")
    settings = _common.load_settings()
    report = run_upgrade_check(
        settings,
        to,
        from_version=from_version,
        plan_only=dry_run or plan_only,
        phase=lambda text: _common.err.print(f"… {text}", markup=False),
        prove_backup=prove_fresh_backup,
    )
    if json_output:
        _common.emit_json(report.to_json())
    else:
        _render(report.to_json())
    if not report.ok:
        raise typer.Exit(1)


def _render(doc: dict[str, Any]) -> None:
    say = _common.out.print
    title = "upgrade plan" if doc["plan_only"] else "upgrade"
    say(f"{title} v{doc['from']} ({doc['from_source']}) -> v{doc['to']}", markup=False)
    applied = doc["applied_migrations"]
    if isinstance(applied, list):
        newest = applied[-1] if applied else "none"
        say(f"database: {len(applied)} migrations applied, newest {newest}", markup=False)
    backup = doc["backup"]
    verify = doc["verify"]
    if isinstance(backup, dict):
        verdict = verify.get("verdict") if isinstance(verify, dict) else "not verified"
        say(f"backup: {backup['id']} ({verdict})", markup=False)
    for key, title in (
        ("migrations", "migrations the target applies"),
        ("incidents_fixed", "incidents fixed in between"),
    ):
        items = doc[key]
        if isinstance(items, list) and items:
            say(f"{title}:", markup=False)
            for item in items:
                if isinstance(item, dict):
                    name = item.get("name") or item.get("id")
                    note = item.get("detail") or item.get("title") or ""
                    flag = " [DATA]" if item.get("effect") in ("deletes", "rewrites") else ""
                    say(f"  {name}{flag} {note}".rstrip(), markup=False)
    for key, title in (
        ("removed_keys", "configured keys the target ignores"),
        ("missing_required_keys", "keys the target requires, not set"),
        ("new_keys", "keys the target adds"),
        ("warnings", "warnings"),
        ("reasons", "blocking problems in this plan" if doc["plan_only"] else "NO-GO because"),
    ):
        items = doc[key]
        if items:
            listed = items.items() if isinstance(items, dict) else items
            say(f"{title}:", markup=False)
            for item in listed:
                shown = f"{item[0]} (removed in {item[1]})" if isinstance(item, tuple) else item
                say(f"  {shown}", markup=False)
    if doc["plan_only"]:
        say("dry run: no backup taken, no go/no-go (run without --dry-run)", markup=False)
        return
    say("verdict: " + ("GO" if doc["go"] else "NO-GO"), markup=False)
    rollback = doc["rollback"]
    if isinstance(rollback, list) and rollback:
        say("rollback:", markup=False)
        for step in rollback:
            say(f"  {step}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("upgrade-check")(upgrade_check)
