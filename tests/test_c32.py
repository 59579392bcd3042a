"""c32check addresses: known vectors both ways, lenient decoding, checksum validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbtc_ops.clarity import (
    C32_ALPHABET,
    ClarityError,
    c32_address,
    c32_decode,
    c32_decode_bytes,
    c32_encode,
)

HASH = bytes.fromhex("a46ff88886c2ef9762d970b4d2c63678835bd39d")

VECTORS = [
    (22, HASH, "SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7"),
    (26, HASH, "ST2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKQYAC0RQ"),
    (20, HASH, "SM2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKQVX8X0G"),
    (21, HASH, "SN2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKP6D2ZK9"),
    (22, bytes(20), "SP000000000000000000002Q6VF78"),
    (
        20,
        bytes.fromhex("f6decc7cfff2a413bd7cd4f53c25ad7fd1899acc"),
        "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4",
    ),
]


@pytest.mark.parametrize(("version", "hash160", "address"), VECTORS)
def test_known_addresses_both_ways(version: int, hash160: bytes, address: str) -> None:
    assert c32_address(version, hash160) == address
    assert c32_decode(address) == (version, hash160)


def test_decoding_is_lenient_like_c32check() -> None:
    assert c32_decode("sp2j6zy48gv1ez5v2v5rb9mp66sw86pykknrv9ej7") == (22, HASH)
    # O reads as 0, I and L read as 1.
    assert c32_decode("SPOOOOOOOOOOOOOOOOOOOO2Q6VF78") == (22, bytes(20))
    assert c32_decode("SP2J6ZY48GVIEZ5V2V5RB9MP66SW86PYKKNRV9EJ7") == (22, HASH)
    assert c32_decode("SP2J6ZY48GVLEZ5V2V5RB9MP66SW86PYKKNRV9EJ7") == (22, HASH)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ8", "bad checksum"),
        ("ST2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7", "bad checksum"),  # SP's checksum, ST version
        ("SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EU7", "invalid c32 character 'U'"),
        ("SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKK", "20-byte hash160"),
        ("SP02J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7", "20-byte hash160"),
        ("XP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7", "not a Stacks address"),
        ("SU2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7", "invalid version character"),
        ("", "not a Stacks address"),
    ],
)
def test_bad_addresses_are_rejected(address: str, fragment: str) -> None:
    with pytest.raises(ClarityError, match=fragment):
        c32_decode(address)


def test_encoding_refuses_invalid_versions_and_hashes() -> None:
    with pytest.raises(ClarityError, match="below 32"):
        c32_address(32, HASH)
    with pytest.raises(ClarityError, match="20 bytes"):
        c32_address(22, HASH + b"\0")


def test_raw_c32_keeps_leading_zero_bytes() -> None:
    assert c32_encode(b"") == ""
    assert c32_encode(b"\0\0\x01") == "001"
    assert c32_decode_bytes("001") == b"\0\0\x01"
    assert c32_encode(bytes([31])) == C32_ALPHABET[31]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 31), st.binary(min_size=20, max_size=20))
def test_addresses_round_trip(version: int, hash160: bytes) -> None:
    address = c32_address(version, hash160)
    assert address[1] == C32_ALPHABET[version]
    assert c32_decode(address) == (version, hash160)
    assert c32_decode(address.lower()) == (version, hash160)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_raw_c32_round_trips(data: bytes) -> None:
    assert c32_decode_bytes(c32_encode(data)) == data
