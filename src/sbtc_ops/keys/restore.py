"""Turning cold backups back into the key, in memory only.

Formats (written by `keys.backup`):
- age, passphrase (scrypt) or X25519 recipients; the plaintext is the key as the signer's
  config takes it (64 hex digits and a newline), so `age -d` restores it without sbtc-ops;
- SLIP-39 shares: one text file per share, `#` header lines, then the mnemonic words.

Every failure is a `RestoreFailed` with an outcome word (recorded in the state store) and a
message naming the file at fault; no message quotes a share word or any key material.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyrage
import shamir_mnemonic
from shamir_mnemonic.share import Share
from shamir_mnemonic.utils import MnemonicError
from shamir_mnemonic.wordlist import WORD_INDEX_MAP

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.keys.material import KeyFormatError, KeySource, SignerKey, parse_private_key, zero

BackupKind = Literal["age-passphrase", "age-recipients", "slip39-share", "sidecar"]

AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
AGE_ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
_MAX_SHARE_FILE = 64 * 1024


class RestoreFailed(Exception):
    """The backup did not give back a key; `outcome` is a short word for the record."""

    def __init__(self, outcome: str, message: str, files: Sequence[Path]) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.files = list(files)


# -- recognising a file --------------------------------------------------------------------


def classify(path: Path) -> BackupKind:
    """What kind of backup file this is, from its content (the name is only a hint)."""
    if path.suffix == ".json":
        return "sidecar"
    try:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError as exc:
        raise SbtcOpsError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(AGE_ARMOR_BEGIN):
        head = _dearmor_head(path, head)
    if head.startswith(AGE_MAGIC):
        stanzas = _age_stanza_types(head)
        if stanzas == {"scrypt"}:
            return "age-passphrase"
        if stanzas and stanzas <= {"X25519"}:
            return "age-recipients"
        raise RestoreFailed(
            "unsupported",
            f"{path}: an age file for {', '.join(sorted(stanzas)) or 'no'} recipients; "
            "sbtc-ops restores passphrase (scrypt) and X25519 files",
            [path],
        )
    return "slip39-share"


def _dearmor_head(path: Path, head: bytes) -> bytes:
    body = bytearray()
    for line in head.splitlines()[1:]:
        if line.strip() == AGE_ARMOR_END:
            break
        body += line.strip()
    try:
        return base64.b64decode(bytes(body), validate=True)
    except (binascii.Error, ValueError):
        raise RestoreFailed(
            "corrupted", f"{path}: damaged age armor (not base64)", [path]
        ) from None


def _age_stanza_types(head: bytes) -> set[str]:
    types = set()
    for line in head.split(b"\n")[1:]:
        if line.startswith(b"---"):
            break
        if line.startswith(b"-> "):
            parts = line.split(b" ")
            types.add(parts[1].decode("ascii", "replace") if len(parts) > 1 else "")
    # age adds random "…-grease" stanzas that every reader must ignore.
    return {kind for kind in types if not kind.endswith("-grease")}


# -- age -----------------------------------------------------------------------------------


def _backup_source(path: Path) -> KeySource:
    return KeySource("backup", f"backup {path}", path)


def restore_age(
    path: Path,
    *,
    passphrase: str | None = None,
    identities: Sequence[pyrage.x25519.Identity] = (),
) -> SignerKey:
    """Decrypt an age backup with a passphrase or X25519 identities; returns the key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SbtcOpsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if passphrase is not None:
            plaintext = pyrage.passphrase.decrypt(data, passphrase)
        else:
            plaintext = pyrage.decrypt(data, list(identities))
    except pyrage.DecryptError as exc:
        raise _age_failure(path, str(exc), passphrase is not None) from None
    text = bytearray(plaintext)
    try:
        return parse_private_key(text, _backup_source(path))
    except KeyFormatError as exc:
        raise RestoreFailed("corrupted", f"{exc.message} (after decryption)", [path]) from None
    finally:
        zero(text)


def _age_failure(path: Path, reason: str, with_passphrase: bool) -> RestoreFailed:
    if reason == "Decryption failed" and with_passphrase:
        return RestoreFailed(
            "wrong-passphrase",
            f"{path}: the passphrase does not decrypt this backup (wrong passphrase)",
            [path],
        )
    if reason == "No matching keys found":
        return RestoreFailed(
            "wrong-identity",
            f"{path}: none of the given age identities can decrypt this backup",
            [path],
        )
    return RestoreFailed(
        "corrupted", f"{path}: the age file is damaged and cannot be decrypted", [path]
    )


# -- SLIP-39 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareFile:
    path: Path
    share: Share
    mnemonic: str

    @property
    def number(self) -> int:
        """1-based share number, as printed in the file name and header."""
        return int(self.share.index) + 1


def read_share_file(path: Path) -> ShareFile:
    """Parse one share file; a damaged one fails with a message naming it."""
    try:
        raw = path.read_bytes()[: _MAX_SHARE_FILE + 1]
    except OSError as exc:
        raise SbtcOpsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RestoreFailed(
            "corrupted", f"share file {path} is corrupted: not text", [path]
        ) from None
    words = [
        word.lower()
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for word in line.split()
    ]
    if not words or len(raw) > _MAX_SHARE_FILE:
        raise RestoreFailed(
            "corrupted", f"share file {path} is corrupted: it holds no SLIP-39 share", [path]
        )
    for position, word in enumerate(words, start=1):
        if word not in WORD_INDEX_MAP:
            raise RestoreFailed(
                "corrupted",
                f"share file {path} is corrupted: word {position} is not a SLIP-39 word",
                [path],
            )
    mnemonic = " ".join(words)
    try:
        share = Share.from_mnemonic(mnemonic)
    except MnemonicError as exc:
        reason = (
            "its checksum does not match (a word is wrong, missing or out of order)"
            if "checksum" in str(exc)
            else f"it does not decode as a SLIP-39 share ({len(words)} words)"
        )
        raise RestoreFailed(
            "corrupted", f"share file {path} is corrupted: {reason}", [path]
        ) from None
    return ShareFile(path, share, mnemonic)


def restore_shares(paths: Sequence[Path]) -> SignerKey:
    """Combine SLIP-39 share files. Every share given takes part in at least one combination
    and all combinations must agree, so a share that decodes but belongs elsewhere is named."""
    shares = _distinct_shares([read_share_file(path) for path in paths])
    first = shares[0].share
    if first.group_count != 1 or first.group_threshold != 1:
        raise RestoreFailed(
            "unsupported",
            f"{shares[0].path}: multi-group SLIP-39 sets are not supported",
            [shares[0].path],
        )
    needed = int(first.member_threshold)
    if len(shares) < needed:
        raise RestoreFailed(
            "too-few-shares",
            f"{len(shares)} distinct share(s) of set {first.identifier} given; this set needs "
            f"{needed} to restore the key",
            [share.path for share in shares],
        )
    base = shares[:needed]
    secret = _combine(base)
    try:
        for extra in shares[needed:]:
            other = _combine([*base[: needed - 1], extra])
            same = other == secret
            zero(other)
            if not same:
                raise RestoreFailed(
                    "inconsistent-shares",
                    f"share file {extra.path} does not combine to the same key as "
                    f"{_names(base)}: it is corrupted or belongs to another backup",
                    [extra.path],
                )
        return SignerKey(bytearray(secret), _backup_source(base[0].path))
    except KeyFormatError:
        raise RestoreFailed(
            "corrupted",
            f"the shares {_names(base)} restore a secret that is not a signer key",
            [file.path for file in base],
        ) from None
    finally:
        zero(secret)


def _distinct_shares(files: list[ShareFile]) -> list[ShareFile]:
    identifiers = {file.share.identifier for file in files}
    if len(identifiers) > 1:
        groups = "; ".join(
            f"set {ident}: {_names([f for f in files if f.share.identifier == ident])}"
            for ident in sorted(identifiers)
        )
        raise RestoreFailed(
            "mixed-share-sets",
            f"the share files belong to different backups ({groups})",
            [file.path for file in files],
        )
    by_index: dict[int, ShareFile] = {}
    for file in files:
        seen = by_index.get(file.share.index)
        if seen is None:
            by_index[file.share.index] = file
        elif seen.mnemonic != file.mnemonic:
            raise RestoreFailed(
                "corrupted",
                f"share files {seen.path} and {file.path} both claim to be share "
                f"{file.number} but differ: one of them is corrupted",
                [seen.path, file.path],
            )
    return list(by_index.values())


def _combine(files: Sequence[ShareFile]) -> bytearray:
    try:
        return bytearray(shamir_mnemonic.combine_mnemonics([file.mnemonic for file in files]))
    except MnemonicError:
        raise RestoreFailed(
            "inconsistent-shares",
            f"the shares {_names(files)} do not combine (their parameters disagree)",
            [file.path for file in files],
        ) from None


def _names(files: Sequence[ShareFile]) -> str:
    return ", ".join(str(file.path) for file in files)
