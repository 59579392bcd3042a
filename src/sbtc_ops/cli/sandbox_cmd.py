"""`sbtc-ops sandbox-userns`: root prepares the user namespace in which an unprivileged
service runs the restore drill's programs as a dedicated sandbox user (pg/sandboxuser.py).

Run by the systemd unit's `ExecStartPre=+` (`--keep-at`) and `ExecStopPost=+` (`--release`),
and as the compose service's entrypoint (`--exec`). Services are imported inside the command:
see the package docstring (startup cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_SANDBOX_USER = "sbtc-ops-sandbox"


def sandbox_userns(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="With --exec: the command to run as the service user."),
    ] = None,
    service_user: Annotated[
        str, typer.Option(help="The unprivileged service (NAME, UID or UID:GID).")
    ] = "sbtc-ops",
    sandbox_user: Annotated[
        str,
        typer.Option(
            help="The dedicated user the drill's programs run as; it must own nothing else."
        ),
    ] = DEFAULT_SANDBOX_USER,
    keep_at: Annotated[
        Path | None,
        typer.Option(help="Keep the namespace at this path (the unit: its runtime directory)."),
    ] = None,
    release: Annotated[
        Path | None, typer.Option(help="Unmount and remove a namespace kept with --keep-at.")
    ] = None,
    exec_: Annotated[
        bool,
        typer.Option(
            "--exec",
            help="Become the service user running COMMAND, the namespace kept by a child "
            "(the compose entrypoint).",
        ),
    ] = False,
) -> None:
    """Root only: the user namespace mapping the service (0) and the sandbox user (1)."""
    from sbtc_ops.errors import ConfigError
    from sbtc_ops.pg import sandboxuser

    chosen = [name for name, on in (("--keep-at", keep_at), ("--release", release), ("--exec", exec_))
              if on]  # fmt: skip
    if len(chosen) != 1:
        raise ConfigError("sandbox-userns needs exactly one of --keep-at, --release or --exec")
    if release is not None:
        sandboxuser.release(release)
        return
    service = sandboxuser.parse_ids(service_user, "--service-user")
    sandbox = sandboxuser.parse_ids(sandbox_user, "--sandbox-user")
    if keep_at is not None:
        sandboxuser.keep_at(service, sandbox, keep_at)
        typer.echo(f"sandbox user namespace at {keep_at}: {service.label} → 0, {sandbox.label} → 1")
        return
    sandboxuser.exec_as_service(service, sandbox, command or [])


def register(app: typer.Typer) -> None:
    app.command("sandbox-userns")(sandbox_userns)
