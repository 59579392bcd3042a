"""sbtc-ops: the operational best practices for sBTC signers, as commands."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sbtc-ops")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
