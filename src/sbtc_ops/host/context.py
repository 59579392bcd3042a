"""The host as its readers see it: HostContext (files under --root, commands, memo, secrets
to scrub) and small parsing helpers. The audit's checks, serve's signer-check and
upgrade-check all read the host through one context."""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, TypeVar

from sbtc_ops import redact
from sbtc_ops.config import Settings, secret_values
from sbtc_ops.files import UnsafeFileError, open_regular, read_capped
from sbtc_ops.host.commands import CommandResult, CommandRunner, OfflineRunner, SubprocessRunner
from sbtc_ops.host.errors import EvidenceError, HostFileError, Unavailable
from sbtc_ops.host.rootpath import glob_in_root, resolve_in_root

T = TypeVar("T")

# Files larger than this are not evidence an audit needs to read whole.
MAX_READ_BYTES = 8 * 1024 * 1024


# -- the audited host -----------------------------------------------------------------------


class _Slot:
    """Compute-once cell shared by concurrent checks (first caller computes, others wait)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def get(self, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if not self.done:
                try:
                    self.value = compute()
                except Exception as exc:  # noqa: BLE001 - replayed to every caller below
                    self.error = exc
                self.done = True
        if self.error is not None:
            raise self.error
        return self.value


class HostContext:
    """Everything a check may touch: files under `root`, one command runner, settings, clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        root: Path = Path("/"),
        runner: CommandRunner | None = None,
        now: datetime | None = None,
        command_timeout_s: float | None = None,
        extra_secrets: Iterable[str] = (),
    ) -> None:
        self.settings = settings
        self.root = root
        self.live = root == Path("/")
        self.runner: CommandRunner = runner or (
            SubprocessRunner() if self.live else OfflineRunner()
        )
        self.now = now or datetime.now(UTC)
        self.command_timeout_s = command_timeout_s or settings.audit.command_timeout_s
        self.privileged = self.live and os.geteuid() == 0
        self._slots: dict[tuple[Any, ...], _Slot] = {}
        self._slots_lock = threading.Lock()
        # Checks run concurrently and may find secrets at the same time: adding one is a
        # read-modify-write of the list, so it is serialised; scrub reads one snapshot.
        self._secrets_lock = threading.Lock()
        self._secrets = sorted(
            {s for s in (*settings_secrets(settings), *extra_secrets) if _scrubbable(s)},
            key=len,
            reverse=True,
        )

    # -- sharing ----------------------------------------------------------------------------

    def _slot(self, key: tuple[Any, ...]) -> _Slot:
        with self._slots_lock:
            return self._slots.setdefault(key, _Slot())

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """Compute once per audit, shared by every check asking for the same key."""
        result: T = self._slot(("memo", key)).get(compute)
        return result

    # -- commands ---------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        """Run a command through the injected runner; identical commands run once."""
        args = tuple(argv)
        limit = timeout or self.command_timeout_s
        result: CommandResult = self._slot(("cmd", args)).get(lambda: self.runner(args, limit))
        return result

    def run_ok(self, argv: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        """Like run, but a non-zero exit is Unavailable, naming the command's own complaint."""
        result = self.run(argv, timeout=timeout)
        if not result.ok:
            raise Unavailable(f"`{' '.join(argv)}` failed: {result.first_error_line()}")
        return result

    # -- files ------------------------------------------------------------------------------

    def host_path(self, path: str | PurePath) -> Path:
        """Where a path of the audited host is on this machine. Under --root every component
        is resolved inside the tree (see rootpath): symlinks, absolute ones included, and
        `..` never lead out of it. HostFileError for a symlink loop."""
        path = Path(path)
        if self.live and not path.is_absolute():
            return path
        if not self.live and path.is_absolute() and path.is_relative_to(self.root):
            path = Path("/") / path.relative_to(self.root)  # settings may point into the tree
        try:
            return resolve_in_root(self.root, PurePosixPath(path))
        except OSError as exc:
            raise HostFileError(f"cannot resolve {path}: {_reason(exc)}") from None

    def show(self, path: str | PurePath) -> str:
        """A path as the audited host names it (settings may point into the --root tree)."""
        real = Path(path)
        if not self.live and real.is_absolute() and real.is_relative_to(self.root):
            return "/" + str(real.relative_to(self.root))
        return str(path)

    def exists(self, path: str | PurePath) -> bool:
        try:
            return self.host_path(path).exists()
        except (HostFileError, OSError):
            return False

    def stat(self, path: str | PurePath) -> os.stat_result:
        try:
            return self.host_path(path).stat()
        except FileNotFoundError:
            raise HostFileError(f"{path} does not exist") from None
        except OSError as exc:
            raise HostFileError(f"cannot stat {path}: {_reason(exc)}") from None

    def read_optional(self, path: str | PurePath) -> str | None:
        """The file's text, None when it does not exist; unreadable raises HostFileError.

        Only regular files of at most MAX_READ_BYTES are evidence: a FIFO or a device
        (/dev/zero) would block or never end, and is refused without reading."""
        data = self.read_bytes_capped(path, MAX_READ_BYTES, missing_ok=True)
        return None if data is None else data.decode("utf-8", "replace")

    def read_text(self, path: str | PurePath) -> str:
        text = self.read_optional(path)
        if text is None:
            raise HostFileError(f"{path} does not exist")
        return text

    def read_bytes_capped(
        self, path: str | PurePath, max_bytes: int, *, missing_ok: bool = False
    ) -> bytes | None:
        """The whole regular file, at most `max_bytes` (larger: HostFileError)."""
        real = self.host_path(path)
        try:
            return read_capped(real, max_bytes)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise HostFileError(f"{path} does not exist") from None
        except UnsafeFileError as exc:
            raise HostFileError(exc.message.replace(str(real), str(path))) from None
        except OSError as exc:
            raise HostFileError(f"cannot read {path}: {_reason(exc)}") from None

    def read_head(self, path: str | PurePath, max_bytes: int) -> bytes:
        """The first `max_bytes` of a regular file (a log's first lines, not its gigabytes)."""
        real = self.host_path(path)
        try:
            fd = open_regular(real)
        except FileNotFoundError:
            raise HostFileError(f"{path} does not exist") from None
        except UnsafeFileError as exc:
            raise HostFileError(exc.message.replace(str(real), str(path))) from None
        except OSError as exc:
            raise HostFileError(f"cannot read {path}: {_reason(exc)}") from None
        try:
            with os.fdopen(fd, "rb") as handle:
                return handle.read(max_bytes)
        except OSError as exc:
            raise HostFileError(f"cannot read {path}: {_reason(exc)}") from None

    def glob(self, pattern: str) -> list[Path]:
        """Host paths (as the host sees them) matching an absolute glob pattern; directories
        are entered the way the audited host would (inside --root)."""
        return [Path(match) for match in glob_in_root(self.root, pattern)]

    # -- secrets ----------------------------------------------------------------------------

    def add_secret(self, value: str) -> None:
        """A secret found while auditing (e.g. a password in a .env) is scrubbed from output."""
        if not _scrubbable(value):
            return
        redact.register(value)  # logs and every other output of this process too
        with self._secrets_lock:
            if value not in self._secrets:
                self._secrets = sorted([*self._secrets, value], key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:  # the list is replaced, never mutated: a safe snapshot
            if secret in text:
                text = text.replace(secret, redact.REDACTED)
            elif secret.lower() != secret and secret.lower() in text.lower():
                text = re.sub(re.escape(secret), redact.REDACTED, text, flags=re.IGNORECASE)
        return redact.scrub(text)


def _scrubbable(value: str) -> bool:
    return redact.scrubbable(value)


def parse_toml(text: str, where: str | PurePath) -> dict[str, Any]:
    """A TOML document read from the host; invalid TOML is evidence that cannot be used."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EvidenceError(f"{where}: not valid TOML: {exc}") from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied (run as root)"
    return exc.strerror or type(exc).__name__


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value sbtc-ops' settings hold, for scrubbing findings."""
    return secret_values(settings)


def url_password(url: str) -> str | None:
    """The password of a URL as its client reads it (libpq's reading for database URLs)."""
    credentials = redact.url_credentials(url)
    return credentials[1] if credentials else None
