"""Encryption at rest with age (X25519 recipients), streamed: never the archive in memory.

Only `verify` and `restore` need the identity; `backup` needs the recipients' public keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

import pyrage

from sbtc_ops.errors import ConfigError, SbtcOpsError

AGE_SUFFIX = ".age"
AGE_MAGIC = b"age-encryption.org/v1"


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        return self.target.write(view)

    def flush(self) -> None:
        self.target.flush()

    def writable(self) -> bool:
        return True


def parse_recipients(recipients: list[str]) -> list[pyrage.x25519.Recipient]:
    parsed = []
    for text in recipients:
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except Exception:  # noqa: BLE001 - pyrage raises its own types; the message is ours
            raise ConfigError(
                f"backup.recipients: {text!r} is not a valid age X25519 recipient"
            ) from None
    return parsed


def identity_lines(identity_file: Path | None) -> list[str]:
    """The age identities of an identity file, each checked to parse, as text (for a child
    process that decrypts: it gets them on a pipe). Never echoes the file's content."""
    if identity_file is None:
        raise ConfigError(
            "this backup is encrypted and no age identity is configured",
            hint="pass --identity FILE or set backup.identity_file in sbtc-ops.toml",
        )
    try:
        lines = identity_file.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read age identity file {identity_file}: {exc.strerror}"
        ) from None
    identities = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            pyrage.x25519.Identity.from_str(line)
        except Exception:  # noqa: BLE001
            raise ConfigError(
                f"{identity_file}: line {number} is not an age X25519 identity"
            ) from None
        identities.append(line)
    if not identities:
        raise ConfigError(f"{identity_file}: no age identity (AGE-SECRET-KEY-…) found")
    return identities


def encrypt_stream(reader: IO[bytes], writer: IO[bytes], recipients: list[str]) -> None:
    pyrage.encrypt_io(reader, writer, parse_recipients(recipients))


def decrypt_stream(reader: IO[bytes], writer: IO[bytes], identities: list[Any]) -> None:
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except pyrage.DecryptError as exc:
        raise SbtcOpsError(
            f"cannot decrypt the backup: {exc} (wrong identity, or corrupted data)"
        ) from None


def is_age_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(AGE_MAGIC)) == AGE_MAGIC
