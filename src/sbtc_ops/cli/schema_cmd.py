"""`sbtc-ops schema pin`: record the live signer database's schema as the reference.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from typing import Annotated

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import ConfigError

schema_app = typer.Typer(
    help="The signer schema's reference, which restored backups must equal.",
    no_args_is_help=True,
)


@schema_app.command("pin")
def pin(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Signer database URL (default: the config's db_endpoint)."),
    ] = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Record the live signer database's canonical schema as the reference of its migration
    level, so `verify` and `restore` can vouch for backups of it (every `backup` does this
    too). Run it where the live database is reachable; the reference lives in the state."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.backup.source import parse_target
    from sbtc_ops.verify.reference import pin_live_reference

    settings = _common.load_settings(db={"url": db})
    url = settings.effective_db_url
    if url is None:
        raise ConfigError(
            "no signer database to read: pass --db URL or set db.url / signer config's db_endpoint"
        )
    pinned = pin_live_reference(settings.state_dir, parse_target(url))
    if json_output:
        _common.emit_json({"ok": True, **pinned.to_json()})
        return
    state = "recorded" if pinned.changed else "unchanged (already recorded)"
    _common.out.print(
        f"schema reference {state}: {len(pinned.migrations)} migrations, newest "
        f"{pinned.migrations[-1]}\n  objects     {pinned.objects}\n  sha256      {pinned.digest}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(schema_app, name="schema")
