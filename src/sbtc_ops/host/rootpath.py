"""Paths of an audited tree (`audit --root DIR`) resolved as if DIR were `/`.

The tree is a copy of another host (or a container's filesystem, or a backup of one): its
symlinks mean what they mean on *that* host. An absolute link `/etc/x -> /etc/shadow` names
that host's shadow file, DIR/etc/shadow, never this machine's; `..` stops at DIR, as it stops
at `/`. Resolving every component ourselves (like openat2's RESOLVE_IN_ROOT, which Python
does not offer) keeps every read of the audit inside DIR.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
from pathlib import Path, PurePosixPath

MAX_SYMLINKS = 40
"""Like the kernel's limit: a longer chain (or a loop) is an error, ELOOP."""


def resolve_in_root(root: Path, path: str | PurePosixPath) -> Path:
    """Where `path` (as the audited host names it; relative means relative to its `/`) is
    on this machine, every symlink followed inside `root`. Components that do not exist are
    kept as they are (the caller then finds nothing there). OSError(ELOOP) for a symlink
    loop; other errors reading a link leave that component as it is."""
    pending = _components(PurePosixPath(path))
    resolved: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, name)
        try:
            target = str(candidate.readlink())
        except OSError:  # not a symlink, or absent: a plain component
            resolved.append(name)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "Too many levels of symbolic links", str(path))
        link = PurePosixPath(target)
        if link.is_absolute():
            resolved = []
        pending = _components(link) + pending
    return root.joinpath(*resolved)


def _components(path: PurePosixPath) -> list[str]:
    return [part for part in path.parts if part not in ("/", ".", "")]


MAX_GLOB_MATCHES = 10_000
"""A pattern matching more files than this is not evidence any check reads in full."""


def glob_in_root(root: Path, pattern: str) -> list[PurePosixPath]:
    """Host paths matching an absolute glob pattern (`*`, `?`, `[…]` per component, `**`
    for any depth), directories entered only through `resolve_in_root`, so a symlinked
    directory leads where it leads on the audited host and never out of `root`."""
    found: list[PurePosixPath] = []
    _glob_step(root, PurePosixPath("/"), _components(PurePosixPath(pattern)), found, 0)
    return sorted(set(found))


def _glob_step(
    root: Path, here: PurePosixPath, rest: list[str], found: list[PurePosixPath], depth: int
) -> None:
    if len(found) >= MAX_GLOB_MATCHES or depth > 64:
        return
    if not rest:
        # A directory entry, as Path.glob reports it: a dangling symlink is listed too.
        with contextlib.suppress(OSError):
            if os.path.lexists(resolve_in_root(root, here.parent) / here.name):
                found.append(here)
        return
    head, tail = rest[0], rest[1:]
    if head == "**":
        _glob_step(root, here, tail, found, depth + 1)  # zero directories
        for name in _entries(root, here, dirs_only=True):
            _glob_step(root, here / name, rest, found, depth + 1)
        return
    if not _is_magic(head):
        _glob_step(root, here / head, tail, found, depth + 1)
        return
    for name in _entries(root, here, dirs_only=False):
        if fnmatch.fnmatchcase(name, head):
            _glob_step(root, here / name, tail, found, depth + 1)


def _entries(root: Path, here: PurePosixPath, *, dirs_only: bool) -> list[str]:
    try:
        directory = resolve_in_root(root, here)
        with os.scandir(directory) as listing:
            return sorted(
                entry.name
                for entry in listing
                if not dirs_only or entry.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def _is_magic(component: str) -> bool:
    return any(char in component for char in "*?[")
