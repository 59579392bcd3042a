"""Key parsing as the signer does it, public key derivation, wiping, and where keys are found."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sbtc_ops.discover.load import load_settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.keys.locate import locate_signer_key
from sbtc_ops.keys.material import KeyFormatError, KeySource, parse_private_key
from sbtc_ops.keys.wellknown import WELL_KNOWN_KEYS, well_known
from tests.support.keys import new_key, signer_config, write_private

SOURCE = KeySource("key-file", "test key")


def test_64_hex_derives_the_compressed_public_key() -> None:
    key = new_key()
    with parse_private_key(key.hex, SOURCE) as parsed:
        assert parsed.public_key_hex == key.public_key
        assert parsed.public_key[0] in (2, 3) and len(parsed.public_key) == 33


def test_66_hex_with_the_compression_suffix_is_the_same_key() -> None:
    key = new_key()
    with parse_private_key(key.hex + "01", SOURCE) as parsed:
        assert parsed.public_key_hex == key.public_key


def test_uppercase_and_surrounding_whitespace_are_accepted() -> None:
    key = new_key()
    with parse_private_key(f"  {key.hex.upper()}\n", SOURCE) as parsed:
        assert parsed.public_key_hex == key.public_key


@pytest.mark.parametrize(
    ("suffix_or_text", "message"),
    [
        ("02", "last byte is not 01"),
        ("0", "has 65 characters"),
        ("0101", "has 68 characters"),
    ],
)
def test_bad_lengths_and_suffixes_are_refused(suffix_or_text: str, message: str) -> None:
    key = new_key()
    with pytest.raises(KeyFormatError, match=message) as info:
        parse_private_key(key.hex + suffix_or_text, SOURCE)
    assert key.hex[:8] not in str(info.value)


def test_0x_prefix_non_hex_and_out_of_range_keys_are_refused() -> None:
    key = new_key()
    with pytest.raises(KeyFormatError, match="starts with 0x"):
        parse_private_key("0x" + key.hex, SOURCE)
    with pytest.raises(KeyFormatError, match="not hexadecimal"):
        parse_private_key("zz" + key.hex[2:], SOURCE)
    with pytest.raises(KeyFormatError, match="curve order"):
        parse_private_key("00" * 32, SOURCE)
    with pytest.raises(KeyFormatError, match="curve order"):
        parse_private_key("ff" * 32, SOURCE)


def test_repr_shows_only_the_public_key_and_wipe_clears_the_secret() -> None:
    key = new_key()
    parsed = parse_private_key(key.hex, SOURCE)
    assert key.public_key in repr(parsed)
    assert key.hex[:8] not in repr(parsed) and key.hex[:8] not in str(parsed)
    secret = parsed._secret
    parsed.wipe()
    assert secret == bytearray(32)
    with pytest.raises(RuntimeError):
        parsed.secret_bytes()
    with pytest.raises(TypeError):
        pickle.dumps(parse_private_key(key.hex, SOURCE))


def test_hex_text_is_the_signer_format() -> None:
    key = new_key()
    with parse_private_key(key.hex + "01", SOURCE) as parsed:
        assert bytes(parsed.hex_text()) == (key.hex + "\n").encode()


def test_well_known_table_matches_the_signer_default_key() -> None:
    # signer/src/config/default.toml's private_key derives this public key.
    default = "41634762d89dfa09133a4a8e9c1378d0161d29cd0a9433b51f1e3d32947a73dc"
    with parse_private_key(default, SOURCE) as parsed:
        entry = well_known(parsed.public_key_hex)
    assert entry is not None and "default.toml" in entry.origin
    assert well_known(new_key().public_key) is None
    assert all(len(item.public_key) == 66 for item in WELL_KNOWN_KEYS)


# -- locating the key where the signer gets it -------------------------------------------------


def test_env_file_key_beats_the_signer_config(tmp_path: Path) -> None:
    in_config, in_env = new_key(), new_key()
    config = signer_config(tmp_path / "signer-config.toml", in_config)
    env_file = write_private(tmp_path / ".env", f"SIGNER_SIGNER__PRIVATE_KEY={in_env.hex}01\n")
    settings = load_settings(
        overrides={"signer": {"config_path": str(config), "env_file": str(env_file)}},
        environ={},
    )
    with locate_signer_key(settings) as key:
        assert key.public_key_hex == in_env.public_key
        assert key.source.kind == "env-file" and key.source.path == env_file


def test_signer_config_key_and_its_file(tmp_path: Path) -> None:
    sample = new_key()
    config = signer_config(tmp_path / "signer-config.toml", sample)
    settings = load_settings(overrides={"signer": {"config_path": str(config)}}, environ={})
    with locate_signer_key(settings) as key:
        assert key.public_key_hex == sample.public_key
        assert key.source.kind == "signer-config" and key.source.path == config


def test_key_file_flag_wins_and_missing_key_is_a_config_error(tmp_path: Path) -> None:
    sample = new_key()
    key_file = write_private(tmp_path / "key", sample.hex + "\n")
    settings = load_settings(environ={})
    with locate_signer_key(settings, key_file=key_file) as key:
        assert key.public_key_hex == sample.public_key
    with pytest.raises(ConfigError, match="no signer private key found"):
        locate_signer_key(settings)
