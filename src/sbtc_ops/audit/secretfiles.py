"""Files that hold a secret, and their modes: shared by the secrets and keys areas."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sbtc_ops.audit.framework import HostContext, HostFileError


@dataclass(frozen=True)
class SecretFile:
    path: str
    mode: int  # permission bits
    holds: str  # what secret it holds, never the value

    @property
    def exposed(self) -> bool:
        return bool(self.mode & 0o077)


def files_holding(
    ctx: HostContext, paths: list[str], holds: Callable[[str], str | None]
) -> tuple[list[SecretFile], list[tuple[str, HostFileError]]]:
    """The existing files in which holds(text) names a secret, and those that cannot be read."""
    found: list[SecretFile] = []
    unreadable: list[tuple[str, HostFileError]] = []
    for path in paths:
        try:
            text = ctx.read_optional(path)
            what = None if text is None else holds(text)
            if what is not None:
                found.append(SecretFile(path, ctx.stat(path).st_mode & 0o777, what))
        except HostFileError as exc:
            unreadable.append((path, exc))
    return found, unreadable
