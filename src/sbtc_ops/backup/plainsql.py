"""The roles a plain-SQL dump names, read in one linear pass (the root process reads it).

pg_restore has --no-owner/--no-privileges; a plain dump replayed by psql does not, so the
drill creates the owners and grantees it names first. The dump is hostile: the former
multi-line regular expression backtracked over long lines (a 320 kB line took 58 s). Here
each line is read with a length cap, only lines starting the way pg_dump writes a role
statement are looked at (a prefix check), and those are split by a tokenizer that visits
each byte once. COPY data (the bulk of a dump) is skipped line by line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO

from sbtc_ops.files import open_regular

# A role statement pg_dump writes is short; a longer line is not one (and is skipped).
MAX_STATEMENT_LINE = 64 << 10
_PREFIXES = (b"ALTER ", b"GRANT ", b"REVOKE ", b"SET SESSION AUTHORIZATION ")
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def plain_dump_roles(path: Path) -> set[str]:
    """Role names a plain-SQL dump refers to: owners (ALTER … OWNER TO), grantees (GRANT …
    TO, REVOKE … FROM) and session authorizations, one statement per line at its start, as
    pg_dump writes them; outside COPY data. Time linear in the file, memory bounded."""
    roles: set[str] = set()
    in_copy = False
    with open(open_regular(path), "rb") as handle:
        while line := handle.readline(MAX_STATEMENT_LINE):
            if not line.endswith(b"\n") and len(line) == MAX_STATEMENT_LINE:
                _skip_rest_of_line(handle)
                continue  # too long to be a role statement (nor the end of COPY data)
            if in_copy:
                in_copy = line.rstrip(b"\r\n") != b"\\."
            elif line.startswith(b"COPY "):
                in_copy = True
            elif line.startswith(_PREFIXES):
                role = _statement_role(line.decode("utf-8", "replace").rstrip("\r\n"))
                if role is not None:
                    roles.add(role)
    return roles


def _skip_rest_of_line(handle: IO[bytes]) -> None:
    while (chunk := handle.readline(MAX_STATEMENT_LINE)) and not chunk.endswith(b"\n"):
        pass


def _statement_role(line: str) -> str | None:
    tokens = tokenize(line)
    if tokens is None or len(tokens) < 3 or tokens[-1] != ";":
        return None
    if tokens[:3] == ["SET", "SESSION", "AUTHORIZATION"]:
        literal = tokens[3] if len(tokens) == 5 else ""
        return literal[1:-1].replace("''", "'") if literal.startswith("'") else None
    if tokens[0] == "ALTER":
        return _role_after(tokens, ("OWNER", "TO"), ())
    if tokens[0] == "GRANT":
        return _role_after(tokens, ("TO",), ("WITH", "GRANT", "OPTION"))
    if tokens[0] == "REVOKE":
        return _role_after(tokens, ("FROM",), ())
    return None


def _role_after(tokens: list[str], keyword: tuple[str, ...], option: tuple[str, ...]) -> str | None:
    """The role after the last `keyword`, followed only by `option`, GRANTED BY … and ";"."""
    width = len(keyword)
    found = [i for i in range(1, len(tokens) - width) if tuple(tokens[i : i + width]) == keyword]
    if not found:
        return None
    at = found[-1] + width
    rest = tokens[at + 1 : -1]
    if option and tuple(rest[: len(option)]) == option:
        rest = rest[len(option) :]
    if rest and rest[:2] != ["GRANTED", "BY"]:
        return None
    return _role_name(tokens[at])


def _role_name(token: str) -> str | None:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    if not _WORD.fullmatch(token) or token.lower() in _NOT_ROLES:
        return None
    return token.lower()


def tokenize(line: str) -> list[str] | None:
    """SQL tokens of one line: "quoted identifiers", 'strings', words, single characters.
    Each character is visited once (quotes are closed with str.find, never a backtracking
    pattern); None for an unterminated quote."""
    tokens: list[str] = []
    i, end = 0, len(line)
    while i < end:
        char = line[i]
        if char.isspace():
            i += 1
        elif char in "\"'":
            close = _closing_quote(line, i)
            if close < 0:
                return None
            tokens.append(line[i : close + 1])
            i = close + 1
        elif word := _WORD.match(line, i):
            tokens.append(word.group())
            i = word.end()
        else:
            tokens.append(char)
            i += 1
    return tokens


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote closing the one at `start` (a doubled quote is an escaped one)."""
    quote = line[start]
    i = start + 1
    while (close := line.find(quote, i)) >= 0:
        if line.startswith(quote, close + 1):
            i = close + 2
            continue
        return close
    return -1
