"""Small JSON files the audit keeps between runs in the state directory (mode 0600).

Used for the GitHub releases cache and the previous metrics scrape. They are optimisations
and evidence of the past, never required: unreadable means absent, unwritable is ignored.
"""

from __future__ import annotations

import json
from typing import Any

from sbtc_ops.audit.framework import HostContext
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.files import PRIVATE_DIR_MODE, read_capped, write_private_atomic

MAX_STATE_BYTES = 16 * 1024 * 1024


def read_state(ctx: HostContext, name: str) -> dict[str, Any]:
    try:
        document = json.loads(read_capped(ctx.settings.state_dir / name, MAX_STATE_BYTES))
    except (OSError, ValueError, SbtcOpsError):
        return {}
    return document if isinstance(document, dict) else {}


def write_state(ctx: HostContext, name: str, document: dict[str, Any]) -> None:
    """Complete or not at all (files.write_private_atomic); a failure is ignored."""
    path = ctx.settings.state_dir / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        write_private_atomic(path, json.dumps(document).encode())
    except OSError:
        pass
