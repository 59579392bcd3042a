"""Service roles are sbtc_ops.host.roles; the name stays importable here for the audit's tests."""

from __future__ import annotations

from sbtc_ops.host.roles import service_role

__all__ = ["service_role"]
