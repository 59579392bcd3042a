"""Errors every layer may raise; the CLI maps them onto the exit-code contract.

Exit codes (docs/architecture.md, "Contracts"): 0 all good, 1 a problem was found, 2 could not do the job.
Messages must never contain a secret: they are printed as they are.
"""

from __future__ import annotations


class SbtcOpsError(Exception):
    """sbtc-ops could not do the job (exit 2): bad usage, bad config, a dependency unreachable."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(SbtcOpsError):
    """A configuration file, environment variable or flag is invalid."""


class UsageError(SbtcOpsError):
    """The command line asks for something that cannot be done."""


class DependencyError(SbtcOpsError):
    """Something sbtc-ops needs (a binary, a server, a network endpoint) is unavailable."""


def describe_os_error(exc: OSError) -> str:
    """An OSError as one line for an operator: the cause, then the file it concerns
    (`No space left on device: /var/backups/…`), never a traceback."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"{cause}: {exc.filename}" if exc.filename else cause
