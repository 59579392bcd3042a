"""Backup ids: UTC timestamps that sort in time order, e.g. 20261124T220102Z."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ID_FORMAT = "%Y%m%dT%H%M%SZ"
# The whole id, nothing after it (no newline, no unbounded suffix): ids name directories and
# S3 keys and are shown on terminals. The suffix is short ("dkg").
MAX_SUFFIX = 16
ID_PATTERN = re.compile(rf"[0-9]{{8}}T[0-9]{{6}}Z(-[a-z0-9]{{1,{MAX_SUFFIX}}})?", re.ASCII)


def new_backup_id(now: datetime | None = None, suffix: str | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    base = moment.strftime(ID_FORMAT)
    return f"{base}-{suffix}" if suffix else base


def is_backup_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


def backup_time(backup_id: str) -> datetime:
    """The UTC time a backup id names (any suffix ignored)."""
    return datetime.strptime(backup_id[:16], ID_FORMAT).replace(tzinfo=UTC)
