"""Reading secrets from an operator: the terminal without echo, or a file descriptor.

A passphrase is never taken from argv (visible in `ps`) or the environment. `--passphrase-fd N`
reads one line from descriptor N (as gpg does), so automation can pass it through a pipe:
`sbtc-ops key verify-backup --passphrase-fd 3 FILE 3< <(pass show signer-backup)`.
"""

from __future__ import annotations

import getpass
import os

from sbtc_ops.errors import UsageError
from sbtc_ops.keys.material import zero

MAX_SECRET_LINE = 4096
MIN_PASSPHRASE_LENGTH = 12


def read_line_from_fd(fd: int, what: str) -> bytearray:
    """One line from descriptor `fd`, without its line ending, in a bytearray to wipe.

    Reads byte by byte so nothing after the newline is consumed (the descriptor may be stdin).
    """
    line = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1)
        except OSError as exc:
            zero(line)
            raise UsageError(
                f"cannot read the {what} from file descriptor {fd}: {exc.strerror}"
            ) from None
        if not chunk or chunk == b"\n":
            break
        line += chunk
        if len(line) > MAX_SECRET_LINE:
            zero(line)
            raise UsageError(f"the {what} read from file descriptor {fd} is too long")
    if line.endswith(b"\r"):
        line.pop()
    return line


def _terminal_available() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def passphrase_from_fd(fd: int) -> str:
    line = read_line_from_fd(fd, "passphrase")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the passphrase read from file descriptor {fd} is not UTF-8") from None
    finally:
        zero(line)


def prompt_passphrase(prompt: str, *, confirm: bool) -> str:
    """Ask on the terminal without echo; with `confirm`, ask twice and require the same."""
    if not _terminal_available():
        raise UsageError(
            "no terminal to ask for the passphrase",
            hint="pass it on a file descriptor with --passphrase-fd N",
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise UsageError("the two passphrases differ")
    return first


def get_passphrase(fd: int | None, *, confirm: bool, prompt: str) -> str:
    return passphrase_from_fd(fd) if fd is not None else prompt_passphrase(prompt, confirm=confirm)


def require_strong_passphrase(passphrase: str) -> None:
    """A cold backup is only as strong as its passphrase: refuse short ones outright."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise UsageError(
            f"the passphrase has {len(passphrase)} characters; use at least "
            f"{MIN_PASSPHRASE_LENGTH} (a generated passphrase of several words is best)"
        )
    if not passphrase.strip():
        raise UsageError("the passphrase is blank")
