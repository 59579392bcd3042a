"""Finding the signer's private key where the signer itself gets it.

Order: an explicit `--key-fd` / `--key-file`, then the signer's configuration as loaded into
the settings (`SIGNER_SIGNER__PRIVATE_KEY` in the environment or an env file beats
`[signer] private_key` in signer-config.toml, exactly as for the signer), then the
`signer.key_file` setting.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.keys.material import (
    KeySource,
    SignerKey,
    parse_private_key,
    read_key_text,
    zero,
)
from sbtc_ops.keys.secretio import read_line_from_fd

SIGNER_KEY_ENV = "SIGNER_SIGNER__PRIVATE_KEY"


def configured_key_source(settings: Settings) -> KeySource | None:
    """Where the configured key (settings.signer.private_key) came from."""
    if settings.signer.private_key is None:
        return None
    described = settings.signer.private_key_source
    if described and described.startswith(SIGNER_KEY_ENV):
        if "env file" in described and settings.signer.env_file is not None:
            return KeySource("env-file", described, settings.signer.env_file)
        return KeySource("environment", described)
    if described:
        return KeySource("signer-config", described, settings.signer.config_path)
    if "SBTC_OPS_SIGNER__PRIVATE_KEY" in os.environ:
        return KeySource("environment", "SBTC_OPS_SIGNER__PRIVATE_KEY (environment)")
    config_file = Path(settings.source_files[0]) if settings.source_files else None
    return KeySource(
        "sbtc-ops-config",
        f"{config_file or 'sbtc-ops settings'} signer.private_key",
        config_file,
    )


def key_file_source(path: Path) -> KeySource:
    return KeySource("key-file", f"key file {path}", path)


def load_key_file(path: Path) -> SignerKey:
    source = key_file_source(path)
    text = read_key_text(path, source.description)
    try:
        return parse_private_key(text, source)
    finally:
        zero(text)


def load_key_fd(fd: int) -> SignerKey:
    """One line from descriptor `fd`; on a terminal, asked for without echo."""
    source = KeySource("fd", f"file descriptor {fd}")
    if os.isatty(fd):
        return parse_private_key(getpass.getpass("Signer private key (not shown): "), source)
    text = read_line_from_fd(fd, "private key")
    try:
        return parse_private_key(text, source)
    finally:
        zero(text)


def locate_signer_key(
    settings: Settings, *, key_file: Path | None = None, key_fd: int | None = None
) -> SignerKey:
    """The signer's key from the first place that has one; ConfigError when none does."""
    if key_fd is not None:
        return load_key_fd(key_fd)
    if key_file is not None:
        return load_key_file(key_file)
    source = configured_key_source(settings)
    if source is not None and settings.signer.private_key is not None:
        return parse_private_key(settings.signer.private_key.get_secret_value(), source)
    if settings.signer.key_file is not None:
        return load_key_file(settings.signer.key_file)
    raise ConfigError(
        "no signer private key found",
        hint="point sbtc-ops at the signer's configuration (signer.config_path, "
        "signer.env_file) or at a key file (signer.key_file or --key-file)",
    )
