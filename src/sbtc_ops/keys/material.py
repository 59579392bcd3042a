"""The signer's private key in memory: parsing, public key derivation, best-effort wiping.

The key is accepted exactly as the signer accepts it (stacks-sbtc/sbtc
`signer/src/config/serialization.rs`, `private_key_deserializer`): 64 hex characters, or 66
whose last byte is `01` — the "compressed" suffix stacks tools append, which the signer trims.

Limits of wiping in Python (documented in docs/key-custody.md): the secret is held in a
`bytearray` that `wipe()` overwrites, but strings the key arrived in (a `SecretStr` from the
configuration, a line read from a file) and the `bytes` copies that coincurve, pyrage and
shamir-mnemonic require are immutable and are only freed, not overwritten. No error message,
`repr` or log line built here contains any part of the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import coincurve

from sbtc_ops.errors import ConfigError

KeySourceKind = Literal[
    "signer-config", "env-file", "environment", "sbtc-ops-config", "key-file", "fd", "backup"
]

SECRET_LENGTH = 32
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_MAX_KEY_TEXT = 4096  # a key file is one line; anything larger is the wrong file


@dataclass(frozen=True)
class KeySource:
    """Where a key was read from, for messages and the file checks (never its content)."""

    kind: KeySourceKind
    description: str
    path: Path | None = None


class KeyFormatError(ConfigError):
    """The text is not a private key the signer would accept; the message names the source only."""


class SignerKey:
    """A secp256k1 private key with its compressed public key. Use as a context manager so
    the secret is overwritten when the block ends."""

    __slots__ = ("_secret", "public_key", "source")

    def __init__(self, secret: bytearray, source: KeySource) -> None:
        if len(secret) != SECRET_LENGTH:
            raise KeyFormatError(f"{source.description}: the private key must be 32 bytes")
        try:
            public = coincurve.PublicKey.from_secret(bytes(secret))
        except ValueError:
            raise KeyFormatError(
                f"{source.description}: not a valid secp256k1 private key "
                "(zero or not below the curve order)"
            ) from None
        self._secret = secret
        self.public_key: bytes = public.format(compressed=True)
        self.source = source

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    def secret_bytes(self) -> bytes:
        """An immutable copy for libraries that only take `bytes` (cannot be wiped)."""
        self._require_live()
        return bytes(self._secret)

    def hex_text(self) -> bytearray:
        """The key as the signer's config takes it (64 lowercase hex digits and a newline),
        in a bytearray the caller should wipe."""
        self._require_live()
        text = bytearray(SECRET_LENGTH * 2 + 1)
        digits = b"0123456789abcdef"
        for index, value in enumerate(self._secret):
            text[2 * index] = digits[value >> 4]
            text[2 * index + 1] = digits[value & 0x0F]
        text[-1] = ord("\n")
        return text

    def wipe(self) -> None:
        for index in range(len(self._secret)):
            self._secret[index] = 0
        self._secret = bytearray()

    def _require_live(self) -> None:
        if len(self._secret) != SECRET_LENGTH:
            raise RuntimeError("the key was already wiped")

    def __enter__(self) -> SignerKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"SignerKey(public_key={self.public_key_hex}, source={self.source.description!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a SignerKey cannot be pickled")


def parse_private_key(text: str | bytes | bytearray, source: KeySource) -> SignerKey:
    """Parse a key as the signer does (surrounding whitespace allowed, for files)."""
    if isinstance(text, str):
        try:
            raw = bytearray(text, "ascii")
        except UnicodeEncodeError:
            raise KeyFormatError(
                f"{source.description}: the private key contains non-ASCII characters"
            ) from None
    else:
        raw = bytearray(text)
    try:
        return SignerKey(_decode_key_text(raw, source), source)
    finally:
        zero(raw)


def public_key_of(text: str | bytes | bytearray, source: KeySource) -> bytes:
    """The compressed public key of a key text; the parsed secret is wiped at once."""
    with parse_private_key(text, source) as key:
        return key.public_key


def _decode_key_text(raw: bytearray, source: KeySource) -> bytearray:
    start, end = 0, len(raw)
    while start < end and raw[start] in b" \t\r\n":
        start += 1
    while end > start and raw[end - 1] in b" \t\r\n":
        end -= 1
    length = end - start
    where = source.description
    if bytes(raw[start : start + 2]).lower() == b"0x":
        raise KeyFormatError(
            f"{where}: the private key starts with 0x; the signer expects plain hex "
            "(64 characters, or 66 ending in 01)"
        )
    if length not in (64, 66):
        raise KeyFormatError(
            f"{where}: the private key has {length} characters; the signer expects 64 hex "
            "characters, or 66 ending in the suffix byte 01"
        )
    if length == 66 and raw[end - 2 : end] != b"01":
        raise KeyFormatError(
            f"{where}: the private key has 66 characters but its last byte is not 01 "
            "(the only suffix the signer trims)"
        )
    secret = bytearray(SECRET_LENGTH)
    for index in range(SECRET_LENGTH):
        high = raw[start + 2 * index]
        low = raw[start + 2 * index + 1]
        if high not in _HEX_DIGITS or low not in _HEX_DIGITS:
            zero(secret)
            raise KeyFormatError(f"{where}: the private key is not hexadecimal")
        secret[index] = (_nibble(high) << 4) | _nibble(low)
    return secret


def _nibble(char: int) -> int:
    if char <= ord("9"):
        return char - ord("0")
    return (char | 0x20) - ord("a") + 10


def read_key_text(path: Path, description: str) -> bytearray:
    """A key file's bytes in a bytearray (the caller parses and wipes it)."""
    try:
        with path.open("rb", buffering=0) as handle:
            buffer = bytearray(_MAX_KEY_TEXT + 1)
            size = handle.readinto(buffer) or 0
    except OSError as exc:
        raise ConfigError(f"{description}: cannot read: {exc.strerror}") from None
    if size > _MAX_KEY_TEXT:
        zero(buffer)
        raise KeyFormatError(f"{description}: too large to be a key file")
    data = buffer[:size]
    zero(buffer)
    return data


def zero(buffer: bytearray) -> None:
    """Overwrite a buffer that held secret material."""
    for index in range(len(buffer)):
        buffer[index] = 0
