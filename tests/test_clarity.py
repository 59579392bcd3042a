"""The Clarity codec: vectors for every type, strict decoding with offsets, round trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sbtc_ops.clarity import (
    FALSE,
    MAX_DEPTH,
    MAX_SERIALIZED_BYTES,
    MAX_VALUE_SIZE,
    NONE,
    TRUE,
    Bool,
    Buffer,
    ClarityError,
    ClarityValue,
    ContractPrincipal,
    Int,
    List,
    OptionalSome,
    ResponseErr,
    ResponseOk,
    StandardPrincipal,
    StringAscii,
    StringUtf8,
    Tuple,
    UInt,
    decode,
    decode_hex,
    from_json,
    parse_hex,
    principal_from_text,
)

PAGE_EXAMPLE = "0x020000002103d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967"
PAGE_KEY = "03d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967"
HASH = bytes.fromhex("a46ff88886c2ef9762d970b4d2c63678835bd39d")
DEPLOYER_HASH = bytes.fromhex("f6decc7cfff2a413bd7cd4f53c25ad7fd1899acc")


def u128(value: int) -> str:
    return value.to_bytes(16, "big").hex()


def test_page_example_is_the_33_byte_key() -> None:
    value = decode_hex(PAGE_EXAMPLE)
    assert value == Buffer(bytes.fromhex(PAGE_KEY))
    assert value.to_text() == "0x" + PAGE_KEY
    assert value.to_hex() == PAGE_EXAMPLE


@pytest.mark.parametrize(
    ("hex_value", "expected", "text"),
    [
        ("0000000000000000000000000000000001", Int(1), "1"),
        ("00ffffffffffffffffffffffffffffffff", Int(-1), "-1"),
        ("0200000004deadbeef", Buffer(bytes.fromhex("deadbeef")), "0xdeadbeef"),
        (
            "060011deadbeef11ababffff11deadbeef11ababffff0461626364",
            ContractPrincipal(0, bytes.fromhex("11deadbeef11ababffff11deadbeef11ababffff"), "abcd"),
            None,
        ),
        (
            "0c000000020362617a0906666f6f62617203",
            Tuple({"baz": NONE, "foobar": TRUE}),
            "(tuple (baz none) (foobar true))",
        ),
    ],
)
def test_stacks_core_vectors(hex_value: str, expected: ClarityValue, text: str | None) -> None:
    value = decode_hex(hex_value)
    assert value == expected
    assert value.encode().hex() == hex_value
    if text is not None:
        assert value.to_text() == text


# (value, serialization, text form, typed JSON)
EVERY_TYPE: list[tuple[ClarityValue, str, str, dict[str, object]]] = [
    (Int(-3), "00" + "ff" * 15 + "fd", "-3", {"type": "int", "value": "-3"}),
    (Int(-(2**127)), "0080" + "00" * 15, str(-(2**127)), {"type": "int", "value": str(-(2**127))}),
    (
        Int(2**127 - 1),
        "007f" + "ff" * 15,
        str(2**127 - 1),
        {"type": "int", "value": str(2**127 - 1)},
    ),
    (UInt(5), "01" + u128(5), "u5", {"type": "uint", "value": "5"}),
    (
        UInt(2**128 - 1),
        "01" + "ff" * 16,
        f"u{2**128 - 1}",
        {"type": "uint", "value": str(2**128 - 1)},
    ),
    (Buffer(b""), "0200000000", "0x", {"type": "buffer", "value": "0x"}),
    (Buffer(b"\x00"), "020000000100", "0x00", {"type": "buffer", "value": "0x00"}),
    (TRUE, "03", "true", {"type": "bool", "value": True}),
    (FALSE, "04", "false", {"type": "bool", "value": False}),
    (
        StandardPrincipal(22, HASH),
        "0516" + HASH.hex(),
        "SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7",
        {"type": "principal", "value": "SP2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKNRV9EJ7"},
    ),
    (
        ContractPrincipal(20, DEPLOYER_HASH, "sbtc-registry"),
        "0614" + DEPLOYER_HASH.hex() + "0d" + b"sbtc-registry".hex(),
        "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-registry",
        {"type": "principal", "value": "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-registry"},
    ),
    (
        ResponseOk(Buffer(b"\x03")),
        "07" + "020000000103",
        "(ok 0x03)",
        {"type": "ok", "value": {"type": "buffer", "value": "0x03"}},
    ),
    (
        ResponseErr(UInt(7)),
        "08" + "01" + u128(7),
        "(err u7)",
        {"type": "err", "value": {"type": "uint", "value": "7"}},
    ),
    (NONE, "09", "none", {"type": "none"}),
    (
        OptionalSome(UInt(1)),
        "0a01" + u128(1),
        "(some u1)",
        {"type": "some", "value": {"type": "uint", "value": "1"}},
    ),
    (
        List((UInt(1), UInt(2))),
        "0b00000002" + "01" + u128(1) + "01" + u128(2),
        "(list u1 u2)",
        {"type": "list", "value": [{"type": "uint", "value": "1"}, {"type": "uint", "value": "2"}]},
    ),
    (List(()), "0b00000000", "(list )", {"type": "list", "value": []}),
    (
        Tuple({"b": StringAscii("x"), "a": UInt(1)}),
        "0c00000002" + "0161" + "01" + u128(1) + "0162" + "0d0000000178",
        '(tuple (a u1) (b "x"))',
        {
            "type": "tuple",
            "value": {
                "a": {"type": "uint", "value": "1"},
                "b": {"type": "string-ascii", "value": "x"},
            },
        },
    ),
    (
        StringAscii("hello"),
        "0d00000005" + b"hello".hex(),
        '"hello"',
        {"type": "string-ascii", "value": "hello"},
    ),
    (
        StringAscii('a"b\\c\n'),
        "0d00000006" + b'a"b\\c\n'.hex(),
        '"a\\"b\\\\c\\n"',
        {"type": "string-ascii", "value": 'a"b\\c\n'},
    ),
    (
        StringUtf8("hé"),
        "0e00000003" + "68c3a9",
        'u"h\\u{c3a9}"',
        {"type": "string-utf8", "value": "hé"},
    ),
    (StringUtf8(""), "0e00000000", 'u""', {"type": "string-utf8", "value": ""}),
]


@pytest.mark.parametrize(("value", "hex_value", "text", "as_json"), EVERY_TYPE)
def test_every_type_both_ways(
    value: ClarityValue, hex_value: str, text: str, as_json: dict[str, object]
) -> None:
    assert value.encode().hex() == hex_value
    assert decode(bytes.fromhex(hex_value)) == value
    assert value.to_text() == text
    assert value.to_json() == as_json
    assert from_json(as_json) == value


def test_tuple_keys_are_written_in_byte_order_and_read_in_any_order() -> None:
    value = Tuple({"b": TRUE, "a": TRUE, "B": FALSE})
    assert [name for name, _ in value.fields] == ["B", "a", "b"]
    assert value.encode().hex() == "0c00000003" + "014204" + "016103" + "016203"
    reversed_order = "0c00000003" + "016203" + "016103" + "014204"
    assert decode_hex(reversed_order) == value


def test_lists_accept_compatible_element_types() -> None:
    # The node's least-supertype rules: none fits any optional, buffers of any length mix,
    # ok and err of one response type mix.
    assert decode(List((NONE, OptionalSome(UInt(1)))).encode()).to_text() == "(list none (some u1))"
    assert decode(List((Buffer(b"\x01"), Buffer(b"\x01\x02"))).encode()) == List(
        (Buffer(b"\x01"), Buffer(b"\x01\x02"))
    )
    mixed = List((ResponseOk(UInt(1)), ResponseErr(StringAscii("x"))))
    assert decode(mixed.encode()) == mixed
    nested = List((List(()), List((UInt(1),))))
    assert decode(nested.encode()) == nested


def test_decoded_signer_data_tuple_exposes_fields() -> None:
    value = Tuple(
        {
            "current-aggregate-pubkey": Buffer(bytes.fromhex(PAGE_KEY)),
            "current-signature-threshold": UInt(11),
            "current-signer-principal": principal_from_text(
                "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
            ),
            "current-signer-set": List((Buffer(bytes.fromhex(PAGE_KEY)),)),
        }
    )
    decoded = decode(value.encode())
    assert isinstance(decoded, Tuple)
    assert decoded["current-signature-threshold"] == UInt(11)
    assert decoded.get("missing") is None


# -- strict decoding --------------------------------------------------------------------

ZERO_HASH = "00" * 20


def some_nested(levels: int) -> str:
    return "0a" * levels + "01" + u128(1)


@pytest.mark.parametrize(
    ("hex_value", "fragment", "offset"),
    [
        ("", "type id needs 1 bytes", 0),
        ("0300", "1 trailing bytes", 1),
        ("0200000005aa", "goes beyond the end of the input", 1),
        ("0200000001", "buffer length 1 goes beyond", 1),
        ("00ff", "int needs 16 bytes", 1),
        ("0f", "invalid type id 0x0f", 0),
        ("ff", "invalid type id 0xff", 0),
        ("0a0f", "invalid type id 0x0f", 1),
        ("0520" + ZERO_HASH, "invalid principal version 32", 1),
        ("06ff" + ZERO_HASH + "0161", "invalid principal version 255", 1),
        ("0516" + "00" * 19, "principal hash160 needs 20 bytes", 2),
        ("0d00000002" + "4107", "byte 0x07 is not printable", 6),
        ("0d00000001" + "c3", "byte 0xc3 is not printable", 5),
        ("0d00000001" + "0b", "byte 0x0b is not printable", 5),
        ("0e00000002" + "c328", "not valid UTF-8", 5),
        ("0e00000004" + "6869eda080"[:8], "not valid UTF-8", 7),
        ("0e00000003" + "eda080", "not valid UTF-8", 5),
        ("0200100001", f"buffer length {MAX_VALUE_SIZE + 1} exceeds", 1),
        ("0b00100001", f"list length {MAX_VALUE_SIZE + 1} exceeds", 1),
        ("0b00000003" + "03", "list length 3 goes beyond", 1),
        ("0c00000000", "empty tuples are not allowed", 1),
        ("0c00000002" + "016103" + "016104", "duplicate tuple key 'a'", 8),
        ("0c00000001" + "013103", "invalid tuple key '1'", 5),
        ("0c00000001" + "0003" + "03", "invalid tuple key ''", 5),
        ("0c00000001" + "81" + "61" * 129 + "03", "tuple key of 129 bytes", 5),
        ("0c00000001" + "02c3a9" + "03", "invalid tuple key", 5),
        ("0616" + ZERO_HASH + "0131", "invalid contract name '1'", 22),
        ("0616" + ZERO_HASH + "00", "invalid contract name ''", 22),
        ("0616" + ZERO_HASH + "0461622e63", "invalid contract name 'ab.c'", 22),
        ("0b00000002" + "01" + u128(1) + "00" + u128(1), "list element 1 has type int", 22),
        (
            "0b00000002" + "0c000000010161" + "03" + "0c000000010162" + "03",
            "incompatible",
            13,
        ),
        (some_nested(MAX_DEPTH), "nested deeper than 16", MAX_DEPTH),
        ("0b00000001" * MAX_DEPTH + "0b00000000", "nested deeper than 16", 5 * MAX_DEPTH),
    ],
)
def test_strict_decoding_names_the_byte_offset(hex_value: str, fragment: str, offset: int) -> None:
    with pytest.raises(ClarityError) as caught:
        decode_hex(hex_value)
    assert fragment in str(caught.value)
    assert caught.value.offset == offset
    assert f"at byte {offset}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_nesting_limit_counts_the_top_level() -> None:
    deepest = decode_hex(some_nested(MAX_DEPTH - 1))  # 15 wrappers + the uint = 16 levels
    assert deepest.depth == MAX_DEPTH
    deepest_lists = decode_hex("0b00000001" * (MAX_DEPTH - 1) + "0b00000000")
    assert deepest_lists.depth == MAX_DEPTH


def test_values_over_the_size_limit_are_rejected() -> None:
    half = 600_000
    big_buffer = "02" + half.to_bytes(4, "big").hex() + "00" * half
    with pytest.raises(ClarityError, match=r"list is too large.*\(at byte 0\)"):
        decode_hex("0b00000002" + big_buffer + big_buffer)
    full = "02" + MAX_VALUE_SIZE.to_bytes(4, "big").hex() + "00" * MAX_VALUE_SIZE
    assert len(decode_hex(full).encode()) == MAX_VALUE_SIZE + 5  # a bare 1 MiB buffer is fine
    with pytest.raises(ClarityError, match="too large"):
        decode_hex("0a" + full)
    with pytest.raises(ClarityError, match="bound"):
        decode(b"\x03" + b"\x00" * MAX_SERIALIZED_BYTES)


def test_parse_hex_accepts_prefix_and_rejects_garbage() -> None:
    assert parse_hex("0x0102") == parse_hex("0102") == parse_hex(" 0X0102\n") == b"\x01\x02"
    with pytest.raises(ClarityError, match="'g' at position 2"):
        parse_hex("0x01g2")
    with pytest.raises(ClarityError, match="odd number"):
        parse_hex("0x012")


# -- construction rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Int(2**127),
        lambda: Int(-(2**127) - 1),
        lambda: UInt(-1),
        lambda: UInt(2**128),
        lambda: Int(True),
        lambda: Bool(1),  # type: ignore[arg-type]
        lambda: Buffer(b"\0" * (MAX_VALUE_SIZE + 1)),
        lambda: StandardPrincipal(32, HASH),
        lambda: StandardPrincipal(22, HASH[:19]),
        lambda: ContractPrincipal(22, HASH, "9lives"),
        lambda: ContractPrincipal(22, HASH, "a" * 129),
        lambda: Tuple({}),
        lambda: Tuple([("a", TRUE), ("a", FALSE)]),
        lambda: Tuple({"has space": TRUE}),
        lambda: List((UInt(1), Int(1))),
        lambda: StringAscii("é"),
        lambda: StringAscii("bell\x07"),
        lambda: StringUtf8("\ud800"),
        lambda: OptionalSome("u1"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_cannot_be_built(build: object) -> None:
    with pytest.raises(ClarityError):
        build()  # type: ignore[operator]


def test_values_too_deep_for_a_node_are_not_encoded() -> None:
    value: ClarityValue = UInt(1)
    for _ in range(MAX_DEPTH):
        value = OptionalSome(value)
    with pytest.raises(ClarityError, match="17 levels"):
        value.encode()


def test_tuple_names_follow_clarity_syntax() -> None:
    for name in ("a", "a-b", "is-ok?", "x!", "a/b*c", "+", "<=", ">", "A1_"):
        assert Tuple({name: TRUE})[name] == TRUE
    for name in ("1a", "-a", "a b", "é", "a" * 129, "<<"):
        with pytest.raises(ClarityError):
            Tuple({name: TRUE})


# -- property-based ------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9\-_!?]{0,8}", fullmatch=True)
ASCII_TEXT = st.text(
    alphabet=st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n", "\r", "\x0c"]),
    max_size=12,
)
LEAVES: st.SearchStrategy[ClarityValue] = st.one_of(
    st.integers(-(2**127), 2**127 - 1).map(Int),
    st.integers(0, 2**128 - 1).map(UInt),
    st.binary(max_size=40).map(Buffer),
    st.booleans().map(Bool),
    st.just(NONE),
    st.builds(StandardPrincipal, st.integers(0, 31), st.binary(min_size=20, max_size=20)),
    st.builds(
        ContractPrincipal,
        st.integers(0, 31),
        st.binary(min_size=20, max_size=20),
        st.from_regex(r"[a-zA-Z][a-zA-Z0-9\-_]{0,20}", fullmatch=True),
    ),
    ASCII_TEXT.map(StringAscii),
    st.text(max_size=12)
    .filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDFFF for c in t))
    .map(StringUtf8),
)


def _composites(children: st.SearchStrategy[ClarityValue]) -> st.SearchStrategy[ClarityValue]:
    return st.one_of(
        children.map(OptionalSome),
        children.map(ResponseOk),
        children.map(ResponseErr),
        # Lists hold elements of one type: repeat one value, or draw from one leaf kind.
        children.flatmap(lambda item: st.lists(st.just(item), max_size=3)).map(List),
        st.lists(st.integers(0, 2**128 - 1).map(UInt), max_size=4).map(List),
        st.lists(st.binary(max_size=33).map(Buffer), max_size=4).map(List),
        st.dictionaries(NAMES, children, min_size=1, max_size=4).map(Tuple),
    )


VALUES = st.recursive(LEAVES, _composites, max_leaves=12)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(VALUES)
def test_round_trip_random_nested_values(value: ClarityValue) -> None:
    assume(value.depth <= MAX_DEPTH)
    encoded = value.encode()
    assert decode(encoded) == value
    assert decode_hex(value.to_hex()) == value
    assert from_json(value.to_json()) == value


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_the_codecs_error(data: bytes) -> None:
    try:
        value = decode(data)
    except ClarityError:
        return
    assert decode(value.encode()) == value


@FAST
@given(VALUES, st.data())
def test_mutated_values_raise_only_the_codecs_error(
    value: ClarityValue, data: st.DataObject
) -> None:
    assume(value.depth <= MAX_DEPTH)
    encoded = bytearray(value.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(encoded):
            encoded[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "insert":
            encoded.insert(position, data.draw(st.integers(0, 255)))
        elif action == "delete" and position < len(encoded):
            del encoded[position]
        elif action == "truncate":
            del encoded[position:]
    try:
        decoded = decode(bytes(encoded))
    except ClarityError as exc:
        assert exc.offset is not None
        assert 0 <= exc.offset <= len(encoded)
        return
    assert decode(decoded.encode()) == decoded
