"""`sbtc-ops version`: the version, the dependency lock it runs on, and whether the running
environment is exactly that lock (the digest drill attestations record).

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

import platform
from typing import Annotated, Any

import typer

from sbtc_ops.cli import _common


def version(json_output: Annotated[bool, _common.JSON_OPTION] = False) -> None:
    """The version, the SHA-256 of the dependency lock, and whether this environment is it."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops import __version__
    from sbtc_ops.install import inspect_environment

    report = inspect_environment()
    document: dict[str, Any] = {
        "ok": True,
        "version": __version__,
        "python": platform.python_version(),
        "lock_sha256": report.lock_digest,
        "environment": {
            "exact": report.exact,
            "development_checkout": report.editable,
            "site_dirs": report.site_dirs,
            "distributions": report.checked,
            "not_locked": report.not_locked,
            "wrong_version": report.wrong_version,
            "stray": report.stray,
        },
    }
    if json_output:
        _common.emit_json(document)
        return
    typer.echo(f"sbtc-ops {__version__} (Python {document['python']})")
    typer.echo(f"dependency lock sha256: {report.lock_digest}")
    state = "exactly the locked set" if report.exact else "NOT the locked set"
    if report.editable:
        state += " (development checkout: its test lock counts too)"
    typer.echo(f"environment: {report.checked} distributions, {state}")
    for label, items in (
        ("not in the lock", report.not_locked),
        ("other version than locked", report.wrong_version),
        ("importable, installed by no distribution", report.stray),
    ):
        for item in items:
            typer.echo(f"  {label}: {item}")


def register(app: typer.Typer) -> None:
    app.command("version")(version)
