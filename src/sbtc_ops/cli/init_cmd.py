"""`sbtc-ops init`: discover the signer's compose deployment and write sbtc-ops.toml.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import UsageError
from sbtc_ops.files import write_private_atomic

DEFAULT_BACKUP_DIR = Path("/var/backups/sbtc-ops")


def init(
    compose_dir: Annotated[
        Path | None,
        typer.Option("--compose-dir", help="The signer's compose project directory."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the configuration.")
    ] = Path("sbtc-ops.toml"),
    backup_dir: Annotated[
        Path, typer.Option("--backup-dir", help="backup.local_dir to write.")
    ] = DEFAULT_BACKUP_DIR,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, write nothing.")] = False,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """Find the signer deployment (compose files, running containers, standard paths), show
    what was found and where from, and write sbtc-ops.toml (0600; secrets referenced)."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.discover import discover

    if output.exists() and not force and not dry_run:
        raise UsageError(f"{output} exists; use --force to replace it")
    found = discover(compose_dir=compose_dir)
    layer = found.settings_layer()
    written = None
    if found.found and not dry_run:
        layer.setdefault("backup", {})["local_dir"] = str(backup_dir)
        _write(output, render_toml(layer, found.value("compose.dir")))
        written = str(output)
    if json_output:
        _common.emit_json(
            {"ok": found.found, "written": written, "settings": layer, **found.describe()}
        )
    else:
        _print(found.describe(), written)
    if not found.found:
        raise typer.Exit(1)


def _print(doc: dict[str, Any], written: str | None) -> None:
    out = _common.out
    out.print("found:", markup=False)
    for key, fact in doc["found"].items():
        value = fact["value"]
        shown = value if isinstance(value, str) else json.dumps(value)
        out.print(f"  {key:28} {shown}", markup=False)
        out.print(f"  {'':28}   from {fact['source']}", markup=False)
    if doc["missing"]:
        out.print("not found:", markup=False)
        for item in doc["missing"]:
            out.print(f"  - {item}", markup=False)
    for note in doc["notes"]:
        out.print(f"note: {note}", markup=False)
    if written:
        out.print(
            f"wrote {written} (mode 0600; secrets stay in the deployment's .env)", markup=False
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_toml(layer: dict[str, Any], compose_dir: str | None) -> str:
    lines = [
        "# Written by `sbtc-ops init` from the compose project in " + str(compose_dir) + ".",
        "# No secret is copied here: the signer's private key and database password are read",
        "# from the deployment (docker.compose_dir, its .env and compose files) at each run.",
    ]
    for section in ("signer", "docker", "audit", "backup"):
        values = layer.get(section)
        if not values:
            continue
        lines.append("")
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    write_private_atomic(path, text.encode())


def register(app: typer.Typer) -> None:
    app.command("init")(init)
