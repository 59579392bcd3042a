"""Read and rewrite the table of contents of a pg_dump custom or directory archive.

An attacker who hands over an archive is not bound by pg_dump's ordering: pg_restore replays
the entries in the order (and the section) the TOC gives. The hostile corpus uses this to
move a trigger in front of the data it must fire on, as a crafted archive would.

Only what that needs is implemented: the header and the TOC entries of archive versions
1.14-1.16 (pg_dump 12-18), kept byte for byte. Reordering entries and changing a section
keeps the TOC's length, so the data offsets of a custom archive stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
FORMAT_TAR = 3  # toc.dat of a directory archive says tar: its entries name data files
FORMAT_DIRECTORY = 5
SECTION_PRE_DATA = 2
SECTION_DATA = 3
SECTION_POST_DATA = 4
_SECTION_OFFSET_IN_ENTRY = 6  # dumpId, hadDumper, tableoid, oid, tag, desc, *section*


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4
        self.off_size = 8

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int(self) -> int:
        sign = self.byte()
        raw = self.data[self.pos : self.pos + self.int_size]
        self.pos += self.int_size
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")


@dataclass
class TocEntry:
    """One entry: its raw bytes, the fields a rewrite looks at, where its section int sits."""

    raw: bytes
    dump_id: int
    desc: str
    tag: str
    section: int
    section_at: int  # offset of the section int inside `raw`

    def with_section(self, section: int, int_size: int) -> TocEntry:
        encoded = b"\x00" + section.to_bytes(int_size, "little")
        raw = self.raw[: self.section_at] + encoded + self.raw[self.section_at + len(encoded) :]
        return TocEntry(raw, self.dump_id, self.desc, self.tag, section, self.section_at)


@dataclass
class Toc:
    head: bytes  # everything before the entry count
    entries: list[TocEntry]
    tail: bytes  # everything after the last entry (a custom archive's data)
    int_size: int
    archive_format: int

    def to_bytes(self) -> bytes:
        count = b"\x00" + len(self.entries).to_bytes(self.int_size, "little")
        return self.head + count + b"".join(e.raw for e in self.entries) + self.tail

    def find(self, desc: str, tag: str) -> TocEntry:
        for entry in self.entries:
            if entry.desc == desc and entry.tag == tag:
                return entry
        raise LookupError(f"no TOC entry {desc} {tag}")


def read_toc(data: bytes) -> Toc:
    if not data.startswith(MAGIC):
        raise ValueError("not a pg_dump archive (no PGDMP magic)")
    reader = _Reader(data)
    reader.pos = len(MAGIC)
    major, minor, _rev = reader.byte(), reader.byte(), reader.byte()
    if (major, minor) < (1, 14) or (major, minor) > (1, 16):
        raise ValueError(f"archive version {major}.{minor} is not handled")
    reader.int_size, reader.off_size = reader.byte(), reader.byte()
    archive_format = reader.byte()
    if minor >= 15:
        reader.byte()  # compression algorithm
    else:
        reader.int()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.int()
    reader.str()  # database name
    reader.str()  # server version
    reader.str()  # pg_dump version
    head_end = reader.pos
    count = reader.int()
    entries = [_read_entry(reader, minor, archive_format) for _ in range(count)]
    return Toc(data[:head_end], entries, data[reader.pos :], reader.int_size, archive_format)


def _read_entry(reader: _Reader, minor: int, archive_format: int) -> TocEntry:
    start = reader.pos
    dump_id = reader.int()
    reader.int()  # hadDumper
    reader.str()  # tableoid
    reader.str()  # oid
    tag = reader.str() or ""
    desc = reader.str() or ""
    section_at = reader.pos - start
    section = reader.int()
    for _ in ("defn", "dropStmt", "copyStmt", "namespace", "tablespace", "tableam"):
        reader.str()
    if minor >= 16:
        reader.int()  # relkind
    reader.str()  # owner
    reader.str()  # "false" (was: with OIDs)
    while reader.str() is not None:  # dependencies, ended by a NULL string
        pass
    if archive_format == FORMAT_CUSTOM:
        reader.byte()  # offset flag
        reader.pos += reader.off_size
    elif archive_format in (FORMAT_TAR, FORMAT_DIRECTORY):
        reader.str()  # data file name
    else:
        raise ValueError(f"archive format {archive_format} is not handled")
    raw = reader.data[start : reader.pos]
    return TocEntry(raw, dump_id, desc, tag, section, section_at)


def toc_path(archive: Path) -> Path:
    """The file holding the TOC: the archive itself, or toc.dat of a directory archive."""
    return archive / "toc.dat" if archive.is_dir() else archive


def move_before_data(archive: Path, desc: str, tag: str) -> None:
    """Make the entry `desc tag` a pre-data item placed before the first data item, so
    pg_restore (serial or parallel) runs it before any table is loaded."""
    path = toc_path(archive)
    toc = read_toc(path.read_bytes())
    moved = toc.find(desc, tag)
    rest = [e for e in toc.entries if e is not moved]
    first_data = next(i for i, e in enumerate(rest) if e.section == SECTION_DATA)
    rest.insert(first_data, moved.with_section(SECTION_PRE_DATA, toc.int_size))
    toc.entries = rest
    path.write_bytes(toc.to_bytes())


__all__ = ["Toc", "TocEntry", "move_before_data", "read_toc"]
