"""--root path resolution is sbtc_ops.host.rootpath; the names stay importable here for the
audit's tests."""

from __future__ import annotations

from sbtc_ops.host.rootpath import glob_in_root, resolve_in_root

__all__ = ["glob_in_root", "resolve_in_root"]
