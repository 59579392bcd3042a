"""Small JSON files the audit keeps between runs in the state directory (mode 0600).

Used for the GitHub releases cache and the previous metrics scrape. They are optimisations
and evidence of the past, never required: unreadable means absent, unwritable is ignored.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sbtc_ops.audit.framework import HostContext


def read_state(ctx: HostContext, name: str) -> dict[str, Any]:
    try:
        document = json.loads((ctx.settings.state_dir / name).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def write_state(ctx: HostContext, name: str, document: dict[str, Any]) -> None:
    path = ctx.settings.state_dir / name
    temporary = path.with_name(f".{name}.{os.getpid()}.{id(document)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle)
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)
