"""The shipped table of the signer schema's canonical digests (``schema_digests.toml``).

One ``[[level]]`` per migration level of a signer release: ``release``, ``migrations``
(sorted), ``newest``, ``digest`` (sha256 hex of pg/schema_identity's canonical form) and
``objects`` (the object keys, to name what differs). Written by the maintainer script from the
real migrations; read-only data shipped with sbtc-ops, so it is a reference no backup writer
can change.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from sbtc_ops.signer.knowledge import KnowledgeError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ShippedLevel:
    release: str
    migrations: tuple[str, ...]
    newest: str
    digest: str
    objects: tuple[str, ...]


@lru_cache(maxsize=1)
def shipped_levels() -> tuple[ShippedLevel, ...]:
    text = resources.files("sbtc_ops.signer").joinpath("schema_digests.toml").read_text()
    return parse_levels(text)


def parse_levels(text: str) -> tuple[ShippedLevel, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"schema_digests.toml is not valid TOML: {exc}") from None
    levels = []
    for number, entry in enumerate(data.get("level", []), start=1):
        try:
            level = ShippedLevel(
                release=str(entry["release"]),
                migrations=tuple(sorted(str(m) for m in entry["migrations"])),
                newest=str(entry["newest"]),
                digest=str(entry["digest"]),
                objects=tuple(str(o) for o in entry.get("objects", [])),
            )
        except (KeyError, TypeError) as exc:
            raise KnowledgeError(f"schema_digests.toml level {number}: missing {exc}") from None
        if not _DIGEST.match(level.digest):
            raise KnowledgeError(f"schema_digests.toml level {number}: digest is not sha256 hex")
        levels.append(level)
    return tuple(levels)


def shipped_level(
    migrations: list[str] | tuple[str, ...], levels: tuple[ShippedLevel, ...] | None = None
) -> ShippedLevel | None:
    """The shipped level whose applied migrations are exactly these (any order)."""
    wanted = tuple(sorted(migrations))
    known = shipped_levels() if levels is None else levels
    return next((lv for lv in known if lv.migrations == wanted), None)
