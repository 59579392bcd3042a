"""Helpers for key-custody tests: fresh random signer keys and signer configuration files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import coincurve


@dataclass(frozen=True)
class SampleKey:
    hex: str  # 64 lowercase hex digits
    public_key: str  # compressed, hex

    @property
    def public_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key)

    def forbidden_substrings(self, length: int = 8) -> set[str]:
        """Every run of `length` hex digits of the key, lower and upper case."""
        runs = {self.hex[i : i + length] for i in range(len(self.hex) - length + 1)}
        return runs | {run.upper() for run in runs}

    def forbidden_byte_runs(self, length: int = 8) -> set[bytes]:
        raw = bytes.fromhex(self.hex)
        return {raw[i : i + length] for i in range(len(raw) - length + 1)}


def new_key() -> SampleKey:
    private = coincurve.PrivateKey(os.urandom(32))
    return SampleKey(private.secret.hex(), private.public_key.format(compressed=True).hex())


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def signer_config(
    path: Path,
    key: SampleKey | None,
    *,
    bootstrap: list[str] | None = None,
    endpoints: list[str] | None = None,
    mode: int = 0o600,
) -> Path:
    """A signer-config.toml in the shape the signer reads (private key optional)."""
    lines = ["[signer]", 'network = "mainnet"']
    if key is not None:
        lines.append(f'private_key = "{key.hex}"')
    if bootstrap is not None:
        lines.append("bootstrap_signing_set = [" + ", ".join(f'"{k}"' for k in bootstrap) + "]")
    if endpoints is not None:
        lines += ["", "[stacks]", "endpoints = [" + ", ".join(f'"{u}"' for u in endpoints) + "]"]
    return write_private(path, "\n".join(lines) + "\n", mode)
