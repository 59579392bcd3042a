"""The Clarity decoder bounds its work before decoding, and prints values as the reference
printers do (issue 13).

Work is asserted with the decoder's own counters (DecodeBudget), never with time: a hostile
2 MB answer is refused after a cheap scan, before a single value object is built."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sbtc_ops import clarity
from sbtc_ops.clarity import (
    MAX_DECODE_VALUES,
    MAX_SERIALIZED_BYTES,
    MAX_VALUE_SIZE,
    ClarityError,
    DecodeBudget,
    decode,
    decode_hex,
    parse_hex,
)
from tests.support.cli import CliResult, clean_env, sbtc_ops_executable

Cli = Callable[..., CliResult]

SOME_14_DEEP = b"\x0a" * 14 + b"\x03"  # (some (some … true)), 15 values in 15 bytes


def _list_of(item: bytes, count: int) -> bytes:
    return b"\x0b" + count.to_bytes(4, "big") + item * count


def _nested_some_list() -> bytes:
    """About 2 MB (just under stacks-core's 2 MiB read bound) of deeply nested `some`s: two
    million values, each under the nesting limit. Decoding it all took a minute."""
    count = (MAX_SERIALIZED_BYTES - 5) // len(SOME_14_DEEP)
    return _list_of(SOME_14_DEEP, count)


def test_two_megabytes_of_nested_some_is_refused_before_decoding() -> None:
    budget = DecodeBudget()
    with pytest.raises(ClarityError, match=f"holds more than {MAX_DECODE_VALUES} values"):
        decode(_nested_some_list(), budget=budget)
    assert budget.decoded == 0  # not one value built
    assert budget.scanned == MAX_DECODE_VALUES + 1  # the scan stopped at the first excess


def test_a_long_some_chain_stops_at_the_nesting_limit() -> None:
    budget = DecodeBudget()
    data = b"\x0a" * (MAX_SERIALIZED_BYTES - 1) + b"\x03"
    with pytest.raises(ClarityError, match=r"nested deeper than 16 levels \(at byte 16\)"):
        decode(data, budget=budget)
    assert budget.scanned <= 16
    assert budget.decoded <= 17


def test_input_over_the_serialization_bound_is_refused_unread() -> None:
    budget = DecodeBudget()
    with pytest.raises(ClarityError, match="exceeds the 2097152-byte bound"):
        decode(b"\x03" * (MAX_SERIALIZED_BYTES + 1), budget=budget)
    assert (budget.scanned, budget.decoded) == (0, 0)
    with pytest.raises(ClarityError, match="hex digits exceed the 2097152-byte bound"):
        parse_hex("0x" + "zz" * (MAX_SERIALIZED_BYTES + 1))


def test_a_list_over_the_value_size_limit_stops_at_its_first_element() -> None:
    """1000 buffers of 2000 bytes: 2 MB of type size, over the 1 MiB value limit. The
    element type only grows, so the first element already proves the list too large."""
    buffer = b"\x02" + (2000).to_bytes(4, "big") + b"\xab" * 2000
    budget = DecodeBudget()
    with pytest.raises(ClarityError, match=r"list is too large: type size \d+ exceeds 1048576"):
        decode(_list_of(buffer, 1000), budget=budget)
    assert budget.decoded == 2  # the list and its first element


def test_budget_is_configurable_and_a_value_within_it_decodes() -> None:
    data = _list_of(b"\x03", 100)
    assert decode(data).to_text() == "(list " + " ".join(["true"] * 100) + ")"
    with pytest.raises(ClarityError, match="holds more than 50 values"):
        decode(data, budget=DecodeBudget(max_values=50))


def test_the_largest_valid_buffer_still_decodes() -> None:
    data = b"\x02" + MAX_VALUE_SIZE.to_bytes(4, "big") + b"\x00" * MAX_VALUE_SIZE
    budget = DecodeBudget()
    assert len(decode(data, budget=budget).to_text()) == 2 + 2 * MAX_VALUE_SIZE
    assert budget.decoded == 1


def test_clarity_decode_command_refuses_the_hostile_answer(workdir: Path) -> None:
    """From stdin (a 4 MB argument would not fit in argv): exit 2, clear message."""
    proc = subprocess.run(
        [sbtc_ops_executable(), "clarity", "decode"],
        input="0x" + _nested_some_list().hex(),
        capture_output=True,
        text=True,
        cwd=workdir,
        env=clean_env(workdir / "state"),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "not a valid Clarity value: the value holds more than" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_clarity_decode_command_refuses_endless_stdin(workdir: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [sbtc_ops_executable(), "clarity", "decode"],
            stdin=zero,
            capture_output=True,
            text=True,
            cwd=workdir,
            env=clean_env(workdir / "state"),
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2
    assert "input larger than" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------
# Text form: what stacks-core's `impl fmt::Display for Value` (clarity-types) prints, with
# lists as stacks.js's cvToString prints them (`(list …)`, `(list )` when empty).

SP = "SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7"
SP_HASH = "a46ff88886c2ef9762d970b4d2c63678835bd39d"


def _u128(value: int, signed: bool = False) -> str:
    return value.to_bytes(16, "big", signed=signed).hex()


REFERENCE_TEXT = [
    ("00" + _u128(-3, signed=True), "-3"),
    ("00" + _u128(-(2**127), signed=True), str(-(2**127))),
    ("01" + _u128(2**128 - 1), f"u{2**128 - 1}"),
    ("01" + _u128(0), "u0"),
    ("0200000000", "0x"),
    ("020000000203ff", "0x03ff"),
    ("03", "true"),
    ("04", "false"),
    ("05" + "16" + SP_HASH, SP),
    ("06" + "16" + SP_HASH + "0d" + b"sbtc-registry".hex(), f"{SP}.sbtc-registry"),
    ("07" + "03", "(ok true)"),
    ("08" + "01" + _u128(7), "(err u7)"),
    ("09", "none"),
    ("0a" + "09", "(some none)"),
    ("0b00000000", "(list )"),
    ("0b00000001" + "0b00000000", "(list (list ))"),
    ("0b00000002" + "03" + "04", "(list true false)"),
    (
        "0c00000002" + "01" + b"a".hex() + "03" + "01" + b"b".hex() + "0b00000000",
        "(tuple (a true) (b (list )))",
    ),
    ("0d00000000", '""'),
    ("0d" + "0000000c" + b'tab\there "q"'.hex(), '"tab\\there \\"q\\""'),
    ("0d00000004" + b"a'\\b".hex(), '"a\\\'\\\\b"'),
    ("0e00000000", 'u""'),
    ("0e00000005" + "41" + "f09f9880", 'u"A\\u{f09f9880}"'),
    ("0e00000003" + "0a" + "c3a9", 'u"\\n\\u{c3a9}"'),
    (
        "0a" + "07" + "0c00000001" + "03" + b"key".hex() + "0b00000001" + "0200000001" + "00",
        "(some (ok (tuple (key (list 0x00)))))",
    ),
]


@pytest.mark.parametrize(("hex_value", "text"), REFERENCE_TEXT)
def test_text_is_what_the_reference_printer_prints(hex_value: str, text: str) -> None:
    value = decode_hex(hex_value)
    assert value.to_text() == text
    assert value.to_hex() == "0x" + hex_value  # and it is the value we meant


def test_clarity_decode_prints_the_reference_text(cli: Cli) -> None:
    for hex_value, text in (
        ("0b00000000", "(list )"),
        (REFERENCE_TEXT[9][0], REFERENCE_TEXT[9][1]),
    ):
        result = cli("clarity", "decode", hex_value)
        assert (result.code, result.stdout) == (0, text + "\n"), result.stderr
        as_json = cli("clarity", "decode", "--json", hex_value).json()
        assert as_json["text"] == text


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x06, 0x16]) + bytes(20),  # contract principal cut before its name length
        bytes([0x0C, 0, 0, 0, 1]),  # tuple cut before its first key's length
    ],
)
def test_values_cut_at_a_length_byte_are_the_codecs_error(data: bytes) -> None:
    with pytest.raises(clarity.ClarityError):
        clarity.decode(data)
