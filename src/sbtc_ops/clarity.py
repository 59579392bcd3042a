"""Clarity values (SIP-005 serialization) and c32check addresses. Pure: no I/O.

Decoding is strict, like a Stacks node's untyped deserializer: trailing bytes, lengths
beyond the input, unknown type ids, principal versions >= 32, non-printable string-ascii,
invalid UTF-8, nesting deeper than 16 levels (top level counted), values over the 1 MiB
limit, empty tuples, duplicate or malformed names and lists whose elements have
incompatible types are all rejected with a `ClarityError` that names the byte offset.
The work is bounded before any value is built: at most 2 MiB of input (stacks-core's bound)
and at most MAX_DECODE_VALUES values, counted by a first pass that builds nothing; a list is
refused at the first element that proves it over the 1 MiB value size (see DecodeBudget).

Values are immutable and validated when constructed, so every value that exists can be
encoded, and `decode(value.encode()) == value`.

Text form (`to_text`) is what the reference printers print (stacks-core's `impl Display
for Value` in clarity-types/src/types/mod.rs, and stacks.js `cvToString`, which the Stacks
API's `repr` fields use): `u5`, `-3`, `0x03d8…`, `true`, `none`, `(some u1)`, `(ok 0x…)`,
`(tuple (a u1) (b "x"))`, `SP…`, `SP….contract`, `"ascii"`, `u"utf8"`. Strings use
stacks-core's escapes (Rust's `escape_default` per byte; non-ASCII characters of
string-utf8 as `\\u{<utf-8 hex>}`), so no control character ever reaches a terminal. Lists
print as stacks.js prints them, `(list u1 u2)` and `(list )` when empty: the Rust printer
writes the bare `(u1 u2)` / `()`, which reads as a function call, not a value.

Typed JSON form (`to_json`): `{"type": "uint", "value": "5"}`; integers as decimal strings,
buffers as `0x…`, principals as addresses, optionals/responses wrap `value`, lists hold a
JSON array and tuples an object; `from_json` reads it back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

MAX_VALUE_SIZE = 1024 * 1024
"""stacks-core MAX_VALUE_SIZE: cap on buffer/string lengths, list/tuple counts, type sizes."""

MAX_SERIALIZED_BYTES = 2 * MAX_VALUE_SIZE
"""stacks-core reads at most this many bytes of one serialized value."""

MAX_DEPTH = 16
"""Untyped deserialization depth, top level counted (15 nested composite layers)."""

MAX_DECODE_VALUES = 1 << 16
"""Values one `decode` builds at most (each costs a Python object; see DecodeBudget). Far
above any sbtc-registry answer (a signer set of a few dozen keys) and any Stacks answer
sbtc-ops reads; a larger value is refused before decoding starts."""

MAX_NAME_LEN = 128
MAX_UTF8_CHARS = MAX_VALUE_SIZE // 4
WRAPPER_SIZE = 1
PRINCIPAL_TYPE_SIZE = 148

INT_MIN = -(2**127)
INT_MAX = 2**127 - 1
UINT_MAX = 2**128 - 1

C32_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Address versions (stacks-common c32 / address module).
VERSION_MAINNET_SINGLESIG = 22  # SP
VERSION_MAINNET_MULTISIG = 20  # SM
VERSION_TESTNET_SINGLESIG = 26  # ST
VERSION_TESTNET_MULTISIG = 21  # SN

_CLARITY_NAME = re.compile(r"[a-zA-Z]([a-zA-Z0-9]|[-_!?+<>=/*])*|[-+=/*]|[<>]=?")
_CONTRACT_NAME = re.compile(r"[a-zA-Z]([a-zA-Z0-9]|[-_]){0,127}|__transient")
_ASCII_WHITESPACE = frozenset(b" \t\n\x0c\r")
_HEX_DIGITS = frozenset(string.hexdigits)


class ClarityError(ValueError):
    """Invalid Clarity data or value; `offset` is the byte offset in the input, if any."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")


# --------------------------------------------------------------------------------------
# Types: what the node computes to check list homogeneity and value sizes.


@dataclass(frozen=True)
class ClarityType:
    """A Clarity type signature. `None` stands for Clarity's NoType (e.g. the value of `none`)."""

    kind: str
    length: int = 0
    items: tuple[ClarityType | None, ...] = ()
    fields: tuple[tuple[str, ClarityType], ...] = ()

    @functools.cached_property
    def size(self) -> int:
        """stacks-core TypeSignature::size, computed once per type object (values nested
        16 deep would otherwise recompute their inner types' sizes at every level)."""
        return _compute_type_size(self)

    def __str__(self) -> str:
        def show(item: ClarityType | None) -> str:
            return "UnknownType" if item is None else str(item)

        if self.kind in ("buff", "string-ascii", "string-utf8"):
            return f"({self.kind} {self.length})"
        if self.kind == "list":
            return f"(list {self.length} {show(self.items[0])})"
        if self.kind == "optional":
            return f"(optional {show(self.items[0])})"
        if self.kind == "response":
            return f"(response {show(self.items[0])} {show(self.items[1])})"
        if self.kind == "tuple":
            return "(tuple" + "".join(f" ({name} {kind})" for name, kind in self.fields) + ")"
        return self.kind


INT_TYPE = ClarityType("int")
UINT_TYPE = ClarityType("uint")
BOOL_TYPE = ClarityType("bool")
PRINCIPAL_TYPE = ClarityType("principal")


def _type_size(kind: ClarityType | None) -> int:
    """stacks-core TypeSignature::size (the charged size of the largest value of the type)."""
    if kind is None:
        return 1
    return kind.size


def _compute_type_size(kind: ClarityType) -> int:
    match kind.kind:
        case "int" | "uint":
            return 16
        case "bool":
            return 1
        case "principal":
            return PRINCIPAL_TYPE_SIZE
        case "buff" | "string-ascii":
            return 4 + kind.length
        case "string-utf8":
            return 4 + 4 * kind.length
        case "optional":
            return _type_size(kind.items[0]) + WRAPPER_SIZE
        case "response":
            return max(_type_size(kind.items[0]), _type_size(kind.items[1])) + WRAPPER_SIZE
        case "list":
            return _type_size(kind.items[0]) * kind.length + _signature_size(kind)
        case _:  # tuple
            return (
                2 * len(kind.fields)
                + _signature_size(kind)
                + sum(_type_size(sub) + len(name) for name, sub in kind.fields)
            )


def _signature_size(kind: ClarityType | None) -> int:
    """stacks-core TypeSignature::type_size (the size of the signature itself)."""
    if kind is None or kind.kind in ("int", "uint", "bool", "principal"):
        return 1
    match kind.kind:
        case "buff" | "string-ascii" | "string-utf8":
            return 5
        case "optional":
            return _signature_size(kind.items[0]) + 1
        case "response":
            return _signature_size(kind.items[0]) + _signature_size(kind.items[1]) + 1
        case "list":
            return _signature_size(kind.items[0]) + 5
        case _:  # tuple
            return 2 * len(kind.fields) + sum(
                _signature_size(sub) + len(name) for name, sub in kind.fields
            )


def _check_size(kind: ClarityType, what: str) -> ClarityType:
    size = _type_size(kind)
    if size > MAX_VALUE_SIZE:
        raise ClarityError(f"{what} is too large: type size {size} exceeds {MAX_VALUE_SIZE}")
    return kind


def supertype(a: ClarityType | None, b: ClarityType | None) -> ClarityType | None:
    """The least supertype of two types (Clarity 2.1 rules); ClarityError if incompatible."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    if a.kind != b.kind:
        raise ClarityError(f"incompatible types {a} and {b}")
    if a.kind in ("buff", "string-ascii", "string-utf8"):
        return ClarityType(a.kind, max(a.length, b.length))
    if a.kind == "list":
        entry = supertype(a.items[0], b.items[0])
        return _check_size(ClarityType("list", max(a.length, b.length), (entry,)), "list")
    if a.kind in ("optional", "response"):
        merged = tuple(supertype(x, y) for x, y in zip(a.items, b.items, strict=True))
        return ClarityType(a.kind, items=merged)
    if a.kind == "tuple" and [n for n, _ in a.fields] == [n for n, _ in b.fields]:
        merged_fields = []
        for (name, x), (_, y) in zip(a.fields, b.fields, strict=True):
            sub = supertype(x, y)
            assert sub is not None  # tuple fields always have a concrete type
            merged_fields.append((name, sub))
        return ClarityType("tuple", fields=tuple(merged_fields))
    raise ClarityError(f"incompatible types {a} and {b}")


# --------------------------------------------------------------------------------------
# Values


class ClarityValue(ABC):
    """A Clarity value. Subclasses are frozen dataclasses, validated on construction."""

    type_id: ClassVar[int]

    @property
    @abstractmethod
    def clarity_type(self) -> ClarityType: ...

    @property
    def depth(self) -> int:
        """Nesting levels, this value counted (a bare `u1` is 1, `(some u1)` is 2)."""
        return 1 + max((child.depth for child in self.children()), default=0)

    def children(self) -> tuple[ClarityValue, ...]:
        return ()

    @abstractmethod
    def _payload(self) -> bytes:
        """The serialization after the type id."""

    @abstractmethod
    def to_text(self) -> str: ...

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    def encode(self) -> bytes:
        """SIP-005 serialization; refuses values nested deeper than a node would read."""
        if self.depth > MAX_DEPTH:
            raise ClarityError(f"value nests {self.depth} levels, more than {MAX_DEPTH}")
        return self._serialize()

    def _serialize(self) -> bytes:
        return bytes([self.type_id]) + self._payload()

    def to_hex(self) -> str:
        return "0x" + self.encode().hex()

    def __str__(self) -> str:
        return self.to_text()


def _int_json(kind: str, value: int) -> dict[str, Any]:
    return {"type": kind, "value": str(value)}


@dataclass(frozen=True)
class Int(ClarityValue):
    value: int
    type_id: ClassVar[int] = 0x00

    def __post_init__(self) -> None:
        if type(self.value) is not int or not INT_MIN <= self.value <= INT_MAX:
            raise ClarityError(f"int out of range: {self.value!r}")

    @property
    def clarity_type(self) -> ClarityType:
        return INT_TYPE

    def _payload(self) -> bytes:
        return self.value.to_bytes(16, "big", signed=True)

    def to_text(self) -> str:
        return str(self.value)

    def to_json(self) -> dict[str, Any]:
        return _int_json("int", self.value)


@dataclass(frozen=True)
class UInt(ClarityValue):
    value: int
    type_id: ClassVar[int] = 0x01

    def __post_init__(self) -> None:
        if type(self.value) is not int or not 0 <= self.value <= UINT_MAX:
            raise ClarityError(f"uint out of range: {self.value!r}")

    @property
    def clarity_type(self) -> ClarityType:
        return UINT_TYPE

    def _payload(self) -> bytes:
        return self.value.to_bytes(16, "big")

    def to_text(self) -> str:
        return f"u{self.value}"

    def to_json(self) -> dict[str, Any]:
        return _int_json("uint", self.value)


@dataclass(frozen=True)
class Buffer(ClarityValue):
    data: bytes
    type_id: ClassVar[int] = 0x02

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > MAX_VALUE_SIZE:
            raise ClarityError(f"buffer of {len(self.data)} bytes exceeds {MAX_VALUE_SIZE}")

    @property
    def clarity_type(self) -> ClarityType:
        return ClarityType("buff", len(self.data))

    def _payload(self) -> bytes:
        return len(self.data).to_bytes(4, "big") + self.data

    def to_text(self) -> str:
        return "0x" + self.data.hex()

    def to_json(self) -> dict[str, Any]:
        return {"type": "buffer", "value": "0x" + self.data.hex()}


@dataclass(frozen=True)
class Bool(ClarityValue):
    value: bool

    def __post_init__(self) -> None:
        if not isinstance(self.value, bool):
            raise ClarityError(f"bool needs True or False, not {self.value!r}")

    @property
    def type_id(self) -> int:  # type: ignore[override]
        return 0x03 if self.value else 0x04

    @property
    def clarity_type(self) -> ClarityType:
        return BOOL_TYPE

    def _payload(self) -> bytes:
        return b""

    def to_text(self) -> str:
        return "true" if self.value else "false"

    def to_json(self) -> dict[str, Any]:
        return {"type": "bool", "value": self.value}


def _check_issuer(version: int, hash160: bytes) -> None:
    if type(version) is not int or not 0 <= version < 32:
        raise ClarityError(f"principal version {version!r} is not below 32")
    if len(hash160) != 20:
        raise ClarityError(f"principal hash160 must be 20 bytes, not {len(hash160)}")


@dataclass(frozen=True)
class _Principal(ClarityValue):
    """standard / contract principal: an issuer (version + hash160) and its c32 address."""

    version: int
    hash160: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash160", bytes(self.hash160))
        _check_issuer(self.version, self.hash160)

    @property
    def address(self) -> str:
        return c32_address(self.version, self.hash160)

    @property
    def clarity_type(self) -> ClarityType:
        return PRINCIPAL_TYPE


@dataclass(frozen=True)
class StandardPrincipal(_Principal):
    type_id: ClassVar[int] = 0x05

    @classmethod
    def from_address(cls, address: str) -> StandardPrincipal:
        return cls(*c32_decode(address))

    def _payload(self) -> bytes:
        return bytes([self.version]) + self.hash160

    def to_text(self) -> str:
        return self.address

    def to_json(self) -> dict[str, Any]:
        return {"type": "principal", "value": self.address}


@dataclass(frozen=True)
class ContractPrincipal(_Principal):
    name: str
    type_id: ClassVar[int] = 0x06

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _CONTRACT_NAME.fullmatch(self.name):
            raise ClarityError(f"invalid contract name {self.name!r}")

    @classmethod
    def from_text(cls, text: str) -> ContractPrincipal:
        """From `SP….contract-name`."""
        address, dot, name = text.partition(".")
        if not dot:
            raise ClarityError(f"{text!r} is not a contract principal (ADDRESS.name)")
        return cls(*c32_decode(address), name)

    def _payload(self) -> bytes:
        name = self.name.encode("ascii")
        return bytes([self.version]) + self.hash160 + bytes([len(name)]) + name

    def to_text(self) -> str:
        return f"{self.address}.{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "principal", "value": f"{self.address}.{self.name}"}


def principal_from_text(text: str) -> StandardPrincipal | ContractPrincipal:
    """`SP…` or `SP….contract` (a leading `'` is accepted) as a principal value."""
    text = text.removeprefix("'")
    if "." in text:
        return ContractPrincipal.from_text(text)
    return StandardPrincipal.from_address(text)


@dataclass(frozen=True)
class _Wrapper(ClarityValue):
    """ok / err / some: one inner value."""

    value: ClarityValue
    label: ClassVar[str]
    # Computed once: deriving it on every access costs O(depth) per level (O(depth²) per
    # value), which a list of deeply nested values turns into minutes of work.
    _type: ClarityType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, ClarityValue):
            raise ClarityError(f"{self.label} needs a Clarity value, not {self.value!r}")
        object.__setattr__(self, "_type", self._wrapped_type(self.value.clarity_type))
        _check_size(self._type, f"({self.label} …)")

    @property
    def clarity_type(self) -> ClarityType:
        return self._type

    @staticmethod
    @abstractmethod
    def _wrapped_type(inner: ClarityType) -> ClarityType: ...

    def children(self) -> tuple[ClarityValue, ...]:
        return (self.value,)

    def _payload(self) -> bytes:
        return self.value._serialize()

    def to_text(self) -> str:
        return f"({self.label} {self.value.to_text()})"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.label, "value": self.value.to_json()}


@dataclass(frozen=True)
class ResponseOk(_Wrapper):
    type_id: ClassVar[int] = 0x07
    label: ClassVar[str] = "ok"

    @staticmethod
    def _wrapped_type(inner: ClarityType) -> ClarityType:
        return ClarityType("response", items=(inner, None))


@dataclass(frozen=True)
class ResponseErr(_Wrapper):
    type_id: ClassVar[int] = 0x08
    label: ClassVar[str] = "err"

    @staticmethod
    def _wrapped_type(inner: ClarityType) -> ClarityType:
        return ClarityType("response", items=(None, inner))


@dataclass(frozen=True)
class OptionalNone(ClarityValue):
    type_id: ClassVar[int] = 0x09

    @property
    def clarity_type(self) -> ClarityType:
        return ClarityType("optional", items=(None,))

    def _payload(self) -> bytes:
        return b""

    def to_text(self) -> str:
        return "none"

    def to_json(self) -> dict[str, Any]:
        return {"type": "none"}


@dataclass(frozen=True)
class OptionalSome(_Wrapper):
    type_id: ClassVar[int] = 0x0A
    label: ClassVar[str] = "some"

    @staticmethod
    def _wrapped_type(inner: ClarityType) -> ClarityType:
        return ClarityType("optional", items=(inner,))


@dataclass(frozen=True)
class List(ClarityValue):
    items: tuple[ClarityValue, ...]
    type_id: ClassVar[int] = 0x0B
    _type: ClarityType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        items = tuple(self.items)
        object.__setattr__(self, "items", items)
        if len(items) > MAX_VALUE_SIZE:
            raise ClarityError(f"list of {len(items)} elements exceeds {MAX_VALUE_SIZE}")
        entry: ClarityType | None = None
        for index, item in enumerate(items):
            if not isinstance(item, ClarityValue):
                raise ClarityError(f"list element {index} is not a Clarity value: {item!r}")
            entry = _list_supertype(entry, item, index)
        kind = _check_size(ClarityType("list", len(items), (entry,)), "list")
        object.__setattr__(self, "_type", kind)

    @property
    def clarity_type(self) -> ClarityType:
        return self._type

    def children(self) -> tuple[ClarityValue, ...]:
        return self.items

    def _payload(self) -> bytes:
        return len(self.items).to_bytes(4, "big") + b"".join(
            item._serialize() for item in self.items
        )

    def to_text(self) -> str:
        return "(list " + " ".join(item.to_text() for item in self.items) + ")"

    def to_json(self) -> dict[str, Any]:
        return {"type": "list", "value": [item.to_json() for item in self.items]}


def _list_supertype(
    entry: ClarityType | None, item: ClarityValue, index: int
) -> ClarityType | None:
    try:
        return supertype(entry, item.clarity_type)
    except ClarityError:
        raise ClarityError(
            f"list element {index} has type {item.clarity_type}, "
            f"incompatible with the earlier elements' type {entry}"
        ) from None


def check_name(name: str, what: str = "tuple key") -> str:
    if not 0 < len(name) <= MAX_NAME_LEN or not _CLARITY_NAME.fullmatch(name):
        raise ClarityError(f"invalid {what} {name!r}")
    return name


@dataclass(frozen=True)
class Tuple(ClarityValue):
    """A tuple; build it with `Tuple({"a": UInt(1)})` or from pairs. Keys kept in byte order."""

    fields: tuple[tuple[str, ClarityValue], ...]
    type_id: ClassVar[int] = 0x0C
    _type: ClarityType = field(init=False, repr=False, compare=False)

    def __init__(
        self, fields: Mapping[str, ClarityValue] | Iterable[tuple[str, ClarityValue]]
    ) -> None:
        pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
        if not pairs:
            raise ClarityError("empty tuples are not allowed")
        seen: set[str] = set()
        for name, value in pairs:
            check_name(name)
            if name in seen:
                raise ClarityError(f"duplicate tuple key {name!r}")
            seen.add(name)
            if not isinstance(value, ClarityValue):
                raise ClarityError(f"tuple key {name!r} holds no Clarity value: {value!r}")
        ordered = tuple(sorted(pairs, key=lambda pair: pair[0].encode("ascii")))
        object.__setattr__(self, "fields", ordered)
        kind = ClarityType("tuple", fields=tuple((n, v.clarity_type) for n, v in ordered))
        object.__setattr__(self, "_type", _check_size(kind, "tuple"))

    def __getitem__(self, name: str) -> ClarityValue:
        for key, value in self.fields:
            if key == name:
                return value
        raise KeyError(name)

    def get(self, name: str) -> ClarityValue | None:
        try:
            return self[name]
        except KeyError:
            return None

    def as_dict(self) -> dict[str, ClarityValue]:
        return dict(self.fields)

    @property
    def clarity_type(self) -> ClarityType:
        return self._type

    def children(self) -> tuple[ClarityValue, ...]:
        return tuple(value for _, value in self.fields)

    def _payload(self) -> bytes:
        parts = [len(self.fields).to_bytes(4, "big")]
        for name, value in self.fields:
            parts += [bytes([len(name)]), name.encode("ascii"), value._serialize()]
        return b"".join(parts)

    def to_text(self) -> str:
        return "(tuple" + "".join(f" ({n} {v.to_text()})" for n, v in self.fields) + ")"

    def to_json(self) -> dict[str, Any]:
        return {"type": "tuple", "value": {name: value.to_json() for name, value in self.fields}}


def _is_clarity_ascii(byte: int) -> bool:
    return 0x21 <= byte <= 0x7E or byte in _ASCII_WHITESPACE


def _escape_ascii(byte: int) -> str:
    """Rust's `std::ascii::escape_default`, which Clarity uses to print strings."""
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x27: "\\'", 0x22: '\\"', 0x5C: "\\\\"}
    if byte in named:
        return named[byte]
    if 0x20 <= byte <= 0x7E:
        return chr(byte)
    return f"\\x{byte:02x}"


@dataclass(frozen=True)
class _String(ClarityValue):
    """string-ascii / string-utf8: the type's name and the text's encoding set them apart."""

    text: str
    type_name: ClassVar[str]
    encoding: ClassVar[str]

    @property
    def clarity_type(self) -> ClarityType:
        return ClarityType(self.type_name, len(self.text))

    def _payload(self) -> bytes:
        data = self.text.encode(self.encoding)
        return len(data).to_bytes(4, "big") + data

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "value": self.text}


@dataclass(frozen=True)
class StringAscii(_String):
    type_id: ClassVar[int] = 0x0D
    type_name: ClassVar[str] = "string-ascii"
    encoding: ClassVar[str] = "ascii"

    def __post_init__(self) -> None:
        for index, char in enumerate(self.text):
            if ord(char) > 0x7F or not _is_clarity_ascii(ord(char)):
                raise ClarityError(f"string-ascii character {index} ({char!r}) is not allowed")
        if len(self.text) > MAX_VALUE_SIZE:
            raise ClarityError(f"string-ascii of {len(self.text)} bytes exceeds {MAX_VALUE_SIZE}")

    def to_text(self) -> str:
        return '"' + "".join(_escape_ascii(ord(char)) for char in self.text) + '"'


@dataclass(frozen=True)
class StringUtf8(_String):
    type_id: ClassVar[int] = 0x0E
    type_name: ClassVar[str] = "string-utf8"
    encoding: ClassVar[str] = "utf-8"

    def __post_init__(self) -> None:
        try:
            data = self.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ClarityError(f"string-utf8 is not valid Unicode: {exc.reason}") from None
        if len(self.text) > MAX_UTF8_CHARS or len(data) > MAX_VALUE_SIZE:
            raise ClarityError(f"string-utf8 of {len(self.text)} characters is too long")

    def to_text(self) -> str:
        parts = []
        for char in self.text:
            if ord(char) < 0x80:
                parts.append(_escape_ascii(ord(char)))
            else:
                parts.append("\\u{" + char.encode("utf-8").hex() + "}")
        return 'u"' + "".join(parts) + '"'


TRUE = Bool(True)
FALSE = Bool(False)
NONE = OptionalNone()


# --------------------------------------------------------------------------------------
# Decoding


def encode(value: ClarityValue) -> bytes:
    return value.encode()


@dataclass
class DecodeBudget:
    """How much work one `decode` may do, and how much it did.

    Python builds each value as an object (tens of microseconds apiece), so the number of
    values is bounded *before* any is built: a 2 MiB input can hold two million of them.
    `scanned` counts values seen by that first cheap pass, `decoded` values built after it.
    """

    max_values: int = MAX_DECODE_VALUES
    scanned: int = 0
    decoded: int = 0


def decode(
    data: bytes | bytearray | memoryview, *, budget: DecodeBudget | None = None
) -> ClarityValue:
    """Decode one serialized Clarity value; the whole input must be that value.

    Bounded before decoding: at most MAX_SERIALIZED_BYTES of input (stacks-core's bound)
    and at most `budget.max_values` values (counted by a pass that builds nothing)."""
    data = bytes(data)
    if len(data) > MAX_SERIALIZED_BYTES:
        raise ClarityError(
            f"input of {len(data)} bytes exceeds the {MAX_SERIALIZED_BYTES}-byte bound",
            MAX_SERIALIZED_BYTES,
        )
    budget = budget if budget is not None else DecodeBudget()
    _Scan(data, budget).run()
    reader = _Reader(data, budget)
    value = reader.value(1)
    if reader.pos != len(data):
        raise ClarityError(f"{len(data) - reader.pos} trailing bytes after the value", reader.pos)
    return value


def decode_hex(text: str) -> ClarityValue:
    """Decode hex (with or without `0x`, surrounding whitespace ignored)."""
    return decode(parse_hex(text))


def parse_hex(text: str) -> bytes:
    """Hex digits (optional `0x`) to bytes; ClarityError naming the offending position."""
    stripped = text.strip()
    digits = stripped[2:] if stripped[:2] in ("0x", "0X") else stripped
    if len(digits) > 2 * MAX_SERIALIZED_BYTES:
        raise ClarityError(
            f"{len(digits)} hex digits exceed the {MAX_SERIALIZED_BYTES}-byte bound of a value"
        )
    if digits.isascii() and digits.isalnum() and len(digits) % 2 == 0:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(digits)
    for index, char in enumerate(digits):
        if char not in _HEX_DIGITS:
            raise ClarityError(f"not hex: character {char!r} at position {index} of the hex")
    if len(digits) % 2:
        raise ClarityError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


class _Scan:
    """The first pass of `decode`: walks the serialized structure building nothing, counts
    values and stops as soon as there are too many. Anything malformed ends the walk quietly:
    the decoder then reports it precisely, with its offset."""

    _FIXED: ClassVar[dict[int, int]] = {0x00: 16, 0x01: 16, 0x03: 0, 0x04: 0, 0x05: 21, 0x09: 0}

    def __init__(self, data: bytes, budget: DecodeBudget) -> None:
        self.data = data
        self.budget = budget
        self.pos = 0

    class _Malformed(Exception):
        pass

    def run(self) -> None:
        with contextlib.suppress(self._Malformed):
            self.value(1)

    def _u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise self._Malformed
        self.pos += 4
        return int.from_bytes(self.data[self.pos - 4 : self.pos], "big")

    def _skip(self, count: int) -> None:
        self.pos += count
        if self.pos > len(self.data):
            raise self._Malformed

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise self._Malformed
        self.pos += 1
        return self.data[self.pos - 1]

    def value(self, depth: int) -> None:
        if depth > MAX_DEPTH or self.pos >= len(self.data):
            raise self._Malformed
        self.budget.scanned += 1
        if self.budget.scanned > self.budget.max_values:
            raise ClarityError(
                f"the value holds more than {self.budget.max_values} values; refusing to decode it",
                self.pos,
            )
        type_id = self.data[self.pos]
        self.pos += 1
        if type_id in self._FIXED:
            self._skip(self._FIXED[type_id])
        elif type_id in (0x02, 0x0D, 0x0E):
            self._skip(self._u32())
        elif type_id == 0x06:
            self._skip(21)
            self._skip(self._byte())
        elif type_id in (0x07, 0x08, 0x0A):
            self.value(depth + 1)
        elif type_id == 0x0B:
            for _ in range(self._u32()):
                self.value(depth + 1)
        elif type_id == 0x0C:
            for _ in range(self._u32()):
                self._skip(self._byte())
                self.value(depth + 1)
        else:
            raise self._Malformed


class _Reader:
    def __init__(self, data: bytes, budget: DecodeBudget) -> None:
        self.data = data
        self.pos = 0
        self.budget = budget

    def take(self, count: int, what: str) -> bytes:
        left = len(self.data) - self.pos
        if count > left:
            raise ClarityError(
                f"{what} needs {count} bytes but only {left} are left in the input", self.pos
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def length(self, what: str, min_item_size: int = 1) -> int:
        """A u32 length/count, capped by the value size limit and the bytes left."""
        start = self.pos
        count = int.from_bytes(self.take(4, f"{what} length"), "big")
        if count > MAX_VALUE_SIZE:
            raise ClarityError(f"{what} length {count} exceeds the {MAX_VALUE_SIZE} limit", start)
        left = len(self.data) - self.pos
        if count * min_item_size > left:
            raise ClarityError(
                f"{what} length {count} goes beyond the end of the input ({left} bytes left)",
                start,
            )
        return count

    def value(self, depth: int) -> ClarityValue:
        start = self.pos
        if depth > MAX_DEPTH:
            raise ClarityError(f"value nested deeper than {MAX_DEPTH} levels", start)
        type_id = self.take(1, "type id")[0]
        self.budget.decoded += 1
        handler = _HANDLERS.get(type_id)
        if handler is None:
            raise ClarityError(f"invalid type id 0x{type_id:02x}", start)
        try:
            return handler(self, depth)
        except ClarityError as exc:
            if exc.offset is None:  # a constructor's check: the value starting here
                raise ClarityError(exc.reason, start) from None
            raise

    def issuer(self) -> tuple[int, bytes]:
        start = self.pos
        version = self.take(1, "principal version")[0]
        if version >= 32:
            raise ClarityError(f"invalid principal version {version} (must be below 32)", start)
        return version, self.take(20, "principal hash160")

    def name(self, what: str, pattern: re.Pattern[str]) -> str:
        start = self.pos
        size = self.take(1, f"{what} length")[0]
        if size > MAX_NAME_LEN:
            raise ClarityError(f"{what} of {size} bytes is longer than {MAX_NAME_LEN}", start)
        raw = self.take(size, what)
        text = raw.decode("latin-1")
        if not raw.isascii() or not pattern.fullmatch(text):
            raise ClarityError(f"invalid {what} {text!r}", start)
        return text


def _read_int(reader: _Reader, depth: int) -> ClarityValue:
    return Int(int.from_bytes(reader.take(16, "int"), "big", signed=True))


def _read_uint(reader: _Reader, depth: int) -> ClarityValue:
    return UInt(int.from_bytes(reader.take(16, "uint"), "big"))


def _read_buffer(reader: _Reader, depth: int) -> ClarityValue:
    return Buffer(reader.take(reader.length("buffer"), "buffer"))


def _read_standard(reader: _Reader, depth: int) -> ClarityValue:
    return StandardPrincipal(*reader.issuer())


def _read_contract(reader: _Reader, depth: int) -> ClarityValue:
    version, hash160 = reader.issuer()
    return ContractPrincipal(version, hash160, reader.name("contract name", _CONTRACT_NAME))


def _wrapper_reader(kind: type[_Wrapper]) -> Callable[[_Reader, int], ClarityValue]:
    """The decoder of ok / err / some: the inner value, one level deeper."""

    def read(reader: _Reader, depth: int) -> ClarityValue:
        return kind(reader.value(depth + 1))

    return read


def _read_list(reader: _Reader, depth: int) -> ClarityValue:
    count = reader.length("list")
    items = []
    entry: ClarityType | None = None
    for index in range(count):
        start = reader.pos
        item = reader.value(depth + 1)
        try:
            entry = _list_supertype(entry, item, index)
        except ClarityError as exc:
            raise ClarityError(exc.reason, start) from None
        # The entry type only grows: once `count` entries of it exceed the value size limit
        # the whole list will, so stop now rather than after the last element (the error
        # names the list's own offset, as the final check would).
        _check_size(ClarityType("list", count, (entry,)), "list")
        items.append(item)
    return List(tuple(items))


def _read_tuple(reader: _Reader, depth: int) -> ClarityValue:
    start = reader.pos
    # Smallest entry: 1-byte name length, 1-byte name, 1-byte value.
    count = reader.length("tuple", min_item_size=3)
    if count == 0:
        raise ClarityError("empty tuples are not allowed", start)
    pairs: dict[str, ClarityValue] = {}
    for _ in range(count):
        name_start = reader.pos
        name = reader.name("tuple key", _CLARITY_NAME)
        if name in pairs:
            raise ClarityError(f"duplicate tuple key {name!r}", name_start)
        pairs[name] = reader.value(depth + 1)
    return Tuple(pairs)


def _read_ascii(reader: _Reader, depth: int) -> ClarityValue:
    data = reader.take(reader.length("string-ascii"), "string-ascii")
    for index, byte in enumerate(data):
        if not _is_clarity_ascii(byte):
            raise ClarityError(
                f"string-ascii byte 0x{byte:02x} is not printable ASCII",
                reader.pos - len(data) + index,
            )
    return StringAscii(data.decode("ascii"))


def _read_utf8(reader: _Reader, depth: int) -> ClarityValue:
    data = reader.take(reader.length("string-utf8"), "string-utf8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClarityError(
            f"string-utf8 is not valid UTF-8 ({exc.reason})", reader.pos - len(data) + exc.start
        ) from None
    return StringUtf8(text)


_HANDLERS = {
    0x00: _read_int,
    0x01: _read_uint,
    0x02: _read_buffer,
    0x03: lambda reader, depth: TRUE,
    0x04: lambda reader, depth: FALSE,
    0x05: _read_standard,
    0x06: _read_contract,
    0x07: _wrapper_reader(ResponseOk),
    0x08: _wrapper_reader(ResponseErr),
    0x09: lambda reader, depth: NONE,
    0x0A: _wrapper_reader(OptionalSome),
    0x0B: _read_list,
    0x0C: _read_tuple,
    0x0D: _read_ascii,
    0x0E: _read_utf8,
}


# --------------------------------------------------------------------------------------
# Typed JSON back to values


def from_json(doc: Mapping[str, Any]) -> ClarityValue:
    """The inverse of `to_json`."""
    try:
        kind = doc["type"]
        return _FROM_JSON[kind](doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ClarityError(f"not a typed Clarity JSON value: {doc!r} ({exc!r})") from None
    except ValueError as exc:
        if isinstance(exc, ClarityError):
            raise
        raise ClarityError(f"not a typed Clarity JSON value: {doc!r} ({exc})") from None


_FROM_JSON: dict[str, Callable[[Mapping[str, Any]], ClarityValue]] = {
    "int": lambda d: Int(int(d["value"])),
    "uint": lambda d: UInt(int(d["value"])),
    "buffer": lambda d: Buffer(parse_hex(d["value"])),
    "bool": lambda d: Bool(d["value"]),
    "principal": lambda d: principal_from_text(d["value"]),
    "ok": lambda d: ResponseOk(from_json(d["value"])),
    "err": lambda d: ResponseErr(from_json(d["value"])),
    "none": lambda d: NONE,
    "some": lambda d: OptionalSome(from_json(d["value"])),
    "list": lambda d: List(tuple(from_json(item) for item in d["value"])),
    "tuple": lambda d: Tuple({name: from_json(item) for name, item in d["value"].items()}),
    "string-ascii": lambda d: StringAscii(d["value"]),
    "string-utf8": lambda d: StringUtf8(d["value"]),
}


# --------------------------------------------------------------------------------------
# c32check addresses


def _checksum(version: int, data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(bytes([version]) + data).digest()).digest()[:4]


def c32_encode(data: bytes) -> str:
    """Crockford-style base32 of `data`; each leading zero byte becomes one leading `0`."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 32)
        digits.append(C32_ALPHABET[digit])
    return "0" * zeros + "".join(reversed(digits))


def _normalize_c32(text: str) -> str:
    return text.upper().replace("O", "0").replace("I", "1").replace("L", "1")


def c32_decode_bytes(text: str) -> bytes:
    """The inverse of `c32_encode`; lenient (lowercase, O→0, I/L→1)."""
    normalized = _normalize_c32(text)
    number = 0
    for index, char in enumerate(normalized):
        digit = C32_ALPHABET.find(char)
        if digit < 0:
            raise ClarityError(f"invalid c32 character {text[index]!r} at position {index}")
        number = number * 32 + digit
    zeros = len(normalized) - len(normalized.lstrip("0"))
    return b"\0" * zeros + (number.to_bytes((number.bit_length() + 7) // 8, "big"))


def c32_address(version: int, hash160: bytes) -> str:
    """The c32check address (`SP…`, `SM…`, `ST…`, `SN…`) of a version and hash160."""
    _check_issuer(version, bytes(hash160))
    return "S" + C32_ALPHABET[version] + c32_encode(bytes(hash160) + _checksum(version, hash160))


def c32_decode(address: str) -> tuple[int, bytes]:
    """(version, hash160) of a c32check address; the checksum must match."""
    normalized = _normalize_c32(address.strip())
    if len(normalized) < 3 or normalized[0] != "S":
        raise ClarityError(f"{address!r} is not a Stacks address (S + version + c32check)")
    version = C32_ALPHABET.find(normalized[1])
    if version < 0:
        raise ClarityError(f"{address!r}: invalid version character {address.strip()[1]!r}")
    payload = c32_decode_bytes(normalized[2:])
    if len(payload) != 24 or c32_encode(payload) != normalized[2:]:
        raise ClarityError(f"{address!r} does not encode a 20-byte hash160 and checksum")
    hash160, checksum = payload[:20], payload[20:]
    if _checksum(version, hash160) != checksum:
        raise ClarityError(f"{address!r}: bad checksum")
    return version, hash160
