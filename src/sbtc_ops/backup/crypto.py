"""Encryption at rest with age (X25519 recipients), streamed: never the archive in memory.

Only `verify` and `restore` need the identity; `backup` needs the recipients' public keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

import pyrage

from sbtc_ops.errors import ConfigError, SbtcOpsError
from sbtc_ops.proc import raise_if_interrupted

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


class _Relay:
    """A file object handed to pyrage that remembers what its read/write raised.

    pyrage calls our Python file objects from Rust and folds whatever they raise into one
    `pyrage.EncryptError` whose text is the original's repr: a full disk, an I/O error, a
    closed pipe, Ctrl-C or SIGTERM (raised by our signal handler) would all leave the
    command as an unexpected traceback. The original is kept here and re-raised instead."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.raised: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            raise_if_interrupted()  # before blocking on a child that may never write again
            return self.target.read(size)
        except BaseException as exc:
            self.raised = self.raised or exc
            raise

    def readinto(self, buffer: Any) -> int | None:
        try:
            raise_if_interrupted()
            return self.target.readinto(buffer)  # type: ignore[attr-defined,no-any-return]
        except BaseException as exc:
            self.raised = self.raised or exc
            raise

    def write(self, data: Any) -> int:
        try:
            raise_if_interrupted()
            return self.target.write(data)
        except BaseException as exc:
            self.raised = self.raised or exc
            raise

    def flush(self) -> None:
        try:
            self.target.flush()
        except BaseException as exc:
            self.raised = self.raised or exc
            raise

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True


class EncryptionError(SbtcOpsError):
    """Writing the encrypted copy failed (the message names the cause: disk full, I/O)."""


def encrypt_stream(reader: IO[bytes], writer: IO[bytes], recipients: list[str]) -> None:
    """Encrypt `reader` into `writer`. A failure of either side comes out as itself (an
    OSError, KeyboardInterrupt), not as pyrage's wrapper; anything else pyrage reports
    becomes an EncryptionError (exit 2)."""
    parsed = parse_recipients(recipients)
    source, sink = _Relay(reader), _Relay(writer)
    try:
        pyrage.encrypt_io(source, sink, parsed)
        sink.flush()
    except pyrage.EncryptError as exc:
        raised = source.raised or sink.raised
        if raised is not None:
            raise raised from None
        raise EncryptionError(f"age encryption failed: {exc}") from None
    # A failure pyrage did not pass on (read as an end of input, say) still ends the run:
    # a truncated archive must never be taken for a complete one.
    raised = source.raised or sink.raised
    if raised is not None:
        raise raised


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
