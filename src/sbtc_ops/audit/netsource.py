"""The failure for checks whose criterion is "the service answers". The request itself is the
host layer's (sbtc_ops.host.http)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sbtc_ops.audit.registry import Outcome, failed
from sbtc_ops.host.http import Unreachable

T = TypeVar("T")


def failed_if_unreachable(read: Callable[[], T], remediation: str) -> T | Outcome:
    """The source's answer, or a failure for checks whose criterion is "the service answers"."""
    try:
        return read()
    except Unreachable as exc:
        return failed(str(exc), remediation)
