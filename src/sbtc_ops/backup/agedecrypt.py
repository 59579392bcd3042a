"""age decryption of staged archives, out of our own interpreter and with its header bounded.

pyrage parses an age header in time quadratic in its size, needs no key to do so, and holds
the interpreter while it works: a 2 MB header took 78 s, during which Ctrl-C and SIGTERM did
nothing (issue 21). So, before anything decrypts:

- the header (the lines up to `---`) is scanned here, linearly, and refused beyond
  MAX_HEADER_BYTES or MAX_STANZAS (an sbtc-ops backup's header is a few hundred bytes: one
  stanza per recipient);
- decryption runs in a child process of ours (same user: the identity must not reach the
  sandbox user), with a deadline; Ctrl-C/SIGTERM kill it (proc.run_interruptible). The
  identity goes to it on its stdin pipe, never argv or the environment.

Run as `python -I -m sbtc_ops.backup.agedecrypt` it is that child: it reads a JSON document
on stdin ({"identities": [...], "files": [[source, target], ...]}) and decrypts each source
into a new private target file.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyrage

from sbtc_ops.backup.crypto import AGE_MAGIC, decrypt_stream, identity_lines
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.files import UnsafeFileError, create_private, open_regular
from sbtc_ops.pg.limits import Limits
from sbtc_ops.proc import run_interruptible, signal_group

MAX_HEADER_BYTES = 64 << 10
MAX_STANZAS = 64
# Deadline for decrypting: generous for a slow disk (age itself runs at hundreds of MB/s).
DECRYPT_BASE_S = 300.0
DECRYPT_BYTES_PER_S = 10 << 20
_EXIT_DECRYPT_ERROR = 3


class AgeHeaderError(SbtcOpsError):
    """An age file whose header is not one sbtc-ops will hand to the age parser."""


def check_header(path: Path) -> None:
    """Refuse an age file whose header is over the bounds (read: at most MAX_HEADER_BYTES)."""
    fd = open_regular(path)
    try:
        head = os.read(fd, MAX_HEADER_BYTES + 1)
    finally:
        os.close(fd)
    if not head.startswith(AGE_MAGIC + b"\n"):
        raise AgeHeaderError(f"{path.name}: not an age v1 file")
    end = head.find(b"\n--- ")
    if end < 0:
        raise AgeHeaderError(
            f"{path.name}: age header longer than {MAX_HEADER_BYTES >> 10} KiB (or truncated): "
            "refusing it (an sbtc-ops backup's header is a few hundred bytes)"
        )
    stanzas = head.count(b"\n-> ", 0, end + 1)
    if stanzas > MAX_STANZAS:
        raise AgeHeaderError(
            f"{path.name}: age header has {stanzas} recipient stanzas (at most {MAX_STANZAS})"
        )


def decrypt_files(
    pairs: list[tuple[Path, Path]],
    identity_file: Path | None,
    *,
    timeout_s: float | None = None,
    limits: Limits | None = None,
) -> None:
    """Decrypt each (source, target) in one child process; targets are new 0600 files.
    SbtcOpsError when the identity does not fit or the data is corrupt, AgeHeaderError for
    a header over the bounds, and an error past the deadline (default: scaled by size).
    With a drill's `limits`, a breach of its budget kills the child too (it runs as us, not
    in the sandbox: it holds the identity)."""
    for source, _ in pairs:
        check_header(source)
    document = {
        "identities": identity_lines(identity_file),
        "files": [[str(source), str(target)] for source, target in pairs],
    }
    if timeout_s is None:
        total = sum(source.stat().st_size for source, _ in pairs)
        timeout_s = DECRYPT_BASE_S + total / DECRYPT_BYTES_PER_S
    argv = [sys.executable, "-I", "-m", "sbtc_ops.backup.agedecrypt"]
    try:
        done = run_interruptible(
            argv,
            input_bytes=json.dumps(document).encode(),
            timeout_s=timeout_s,
            on_start=None if limits is None else functools.partial(_track, limits),
        )
    except subprocess.TimeoutExpired:
        _remove(pairs)
        raise SbtcOpsError(f"decryption did not finish within {timeout_s:.0f} s") from None
    except BaseException:
        _remove(pairs)
        raise
    if done.returncode != 0:
        _remove(pairs)
        message = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        if done.returncode == _EXIT_DECRYPT_ERROR and message:
            raise SbtcOpsError(message[0])
        raise SbtcOpsError(f"the decryption process failed (exit status {done.returncode})")


def _track(limits: Limits, proc: subprocess.Popen[bytes]) -> None:
    limits.track(proc, functools.partial(signal_group, proc, signal.SIGKILL))


def _remove(pairs: list[tuple[Path, Path]]) -> None:
    for _, target in pairs:
        target.unlink(missing_ok=True)


def _child() -> int:
    document = json.loads(sys.stdin.buffer.read())
    identities = [pyrage.x25519.Identity.from_str(line) for line in document["identities"]]
    for source, target in document["files"]:
        try:
            reader = os.fdopen(open_regular(Path(source)), "rb")
            with reader, os.fdopen(create_private(Path(target)), "wb") as writer:
                decrypt_stream(reader, writer, identities)
        except (SbtcOpsError, UnsafeFileError, OSError) as exc:
            print(str(exc), file=sys.stderr)
            return _EXIT_DECRYPT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(_child())
