"""sbtc-ops: the operational best practices for sBTC signers, as commands."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Read on first use: importlib.metadata costs a noticeable share of every command's start,
    # and most commands never print the version.
    if name != "__version__":
        raise AttributeError(f"module 'sbtc_ops' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("sbtc-ops")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
