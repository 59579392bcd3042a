"""The compose reader checks use is sbtc_ops.host.compose; these names stay importable here
for the audit's tests."""

from __future__ import annotations

from sbtc_ops.host.compose import compose_files, interpolate_tree

__all__ = ["compose_files", "interpolate_tree"]
