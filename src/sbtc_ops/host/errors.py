"""What the host layer raises when a fact cannot be had.

`Unavailable` means "this host does not offer the fact" (not configured, file missing, tool
not installed, service offline): a caller without it goes on without that fact. The audit
reports it as a skipped check (its `Skip` is this class). `EvidenceError` means the fact exists
but cannot be understood (garbage output, malformed file): the audit reports an error.
"""

from __future__ import annotations


class Unavailable(Exception):
    """A host fact is not available here; the message says why (and never holds a secret)."""


class HostFileError(Unavailable):
    """A file on the host is missing or unreadable."""


class ToolMissing(Unavailable):
    """A command is not installed (or commands cannot run: an offline --root tree)."""


class CommandTimeout(Exception):
    """A command ran past its timeout and was killed."""


class EvidenceError(Exception):
    """Evidence exists but cannot be understood (garbage output, malformed file)."""
