"""The audit framework: check declarations, the host they inspect, the runner and the score.

Adding an area
--------------
1. Create ``src/sbtc_ops/audit/<module>.py`` and set ``AREA = "<area>"`` at module level.
   Every module of this package that defines ``AREA`` is imported by :func:`load_areas`,
   so no other file needs editing. Add the area to ``AREA_ORDER`` below only to fix its
   position in reports (unknown areas are listed last, alphabetically).
2. Declare each check as a function ``(ctx: HostContext) -> Outcome`` decorated with
   :func:`check`: a stable id (``LOG-001``; ids never change meaning once released), the
   area, a title, a :class:`Severity`, the best-practice section it serves, the rationale
   and the default remediation.
3. Return :func:`passed`, :func:`warned`, :func:`failed` or :func:`skipped`. Raise
   :class:`Skip` from anywhere (helpers included) when the check cannot apply: not root,
   tool missing, not configured. Any other exception becomes an ``error`` finding with the
   exception text, never a crash — so raise with messages that hold no secret.
4. Touch the host only through the context: ``ctx.read_text``/``read_optional``/``stat``/
   ``glob``/``exists`` (they honour ``--root``) and ``ctx.run([...])`` (the injectable
   command runner, with timeouts; identical commands run once per audit and are shared).
   Share parsed data between checks with ``ctx.memo(key, compute)``.
5. Test with a fixture tree as ``root`` and a :class:`RecordedRunner` of recorded command
   outputs; assert the exact finding ids and statuses.

Results are :class:`Finding` objects, i.e. :class:`sbtc_ops.results.CheckResult` plus area,
title, severity and rationale. Every string in a finding is scrubbed of the secret values
the context knows before it leaves the runner.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sbtc_ops import redact
from sbtc_ops.audit.rootpath import glob_in_root, resolve_in_root
from sbtc_ops.errors import UsageError
from sbtc_ops.files import UnsafeFileError, open_regular, read_capped
from sbtc_ops.proc import signal_group
from sbtc_ops.redact import PUBLIC_DEFAULT_PASSWORDS as PUBLIC_DEFAULT_PASSWORDS
from sbtc_ops.results import CheckResult, Status

if TYPE_CHECKING:
    from sbtc_ops.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Areas in report order; areas not listed here follow, alphabetically.
AREA_ORDER = (
    "access",
    "firewall",
    "secrets",
    "keys",
    "logs",
    "monitoring",
    "nodes",
    "releases",
    "operations",
)

# Files larger than this are not evidence an audit needs to read whole.
MAX_READ_BYTES = 8 * 1024 * 1024
REDACTED = redact.REDACTED


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def weight(self) -> int:
        return _WEIGHTS[self]


_WEIGHTS = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 5}


# -- what a check returns -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner turns it into a Finding."""

    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None  # overrides the check's default when the fix depends on it


def passed(detail: str, **data: Any) -> Outcome:
    return Outcome(Status.PASS, detail, data)


def warned(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.WARN, detail, data, remediation)


def failed(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.FAIL, detail, data, remediation)


def skipped(reason: str, **data: Any) -> Outcome:
    return Outcome(Status.SKIP, reason, data)


class Skip(Exception):
    """Raise anywhere inside a check: the check is reported as skipped with this reason."""


class HostFileError(Skip):
    """A file on the audited host is missing or unreadable."""


class ToolMissing(Skip):
    """A command the check needs is not installed (or commands cannot run: offline image)."""


class CommandTimeout(Exception):
    """A command ran past its timeout and was killed."""


class EvidenceError(Exception):
    """Evidence exists but cannot be understood (garbage output, malformed file): an error."""


@dataclass(frozen=True)
class Finding(CheckResult):
    """A CheckResult with the audit's extra columns."""

    area: str = ""
    title: str = ""
    severity: str = Severity.MEDIUM.value
    rationale: str = ""


# -- check declarations and the registry ----------------------------------------------------

CheckFunc = Callable[["HostContext"], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    area: str
    title: str
    severity: Severity
    section: str
    rationale: str
    remediation: str
    func: CheckFunc
    timeout_s: float | None = None


REGISTRY: dict[str, Check] = {}
_ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]*-\d{3}$")


def check(
    check_id: str,
    *,
    area: str,
    title: str,
    severity: Severity,
    section: str,
    rationale: str,
    remediation: str,
    timeout_s: float | None = None,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check function under a stable id."""
    if not _ID_PATTERN.match(check_id):
        raise ValueError(f"check id {check_id!r} must look like ABC-001")

    def register(func: CheckFunc) -> CheckFunc:
        existing = REGISTRY.get(check_id)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"duplicate check id {check_id}")
        REGISTRY[check_id] = Check(
            check_id, area, title, severity, section, rationale, remediation, func, timeout_s
        )
        return func

    return register


# Area modules that failed to import: reported as error findings, never silently dropped.
LOAD_ERRORS: dict[str, str] = {}


def load_areas() -> None:
    """Import every area module of `sbtc_ops.audit.areas` (helpers live elsewhere, so a
    broken helper surfaces as the area that imports it, never as an area of its own)."""
    package = importlib.import_module("sbtc_ops.audit.areas")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"sbtc_ops.audit.areas.{info.name}")
        except Exception as exc:  # one broken module must not hide the others
            log.debug("audit module %s failed to import", info.name, exc_info=True)
            LOAD_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"


def _load_error_check(module: str, message: str, number: int) -> Check:
    def report(ctx: HostContext) -> Outcome:
        return Outcome(Status.ERROR, f"audit module {module!r} could not be loaded: {message}")

    return Check(
        f"LOAD-{number:03d}",
        module,
        f"Audit module {module} loads",
        Severity.HIGH,
        "sbtc-ops itself",
        "A module that does not load means its checks did not run.",
        "Reinstall sbtc-ops or report the error; run with -vv for the traceback.",
        report,
    )


def area_rank(area: str) -> tuple[int, str]:
    return (AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER), area)


def known_areas() -> list[str]:
    return sorted({c.area for c in REGISTRY.values()}, key=area_rank)


def select_checks(only: Iterable[str] | None = None) -> list[Check]:
    """The registered checks of the named areas (all when None), in report order."""
    load_areas()
    wanted = {name.strip() for name in only or () if name.strip()}
    unknown = wanted - set(known_areas())
    if unknown:
        raise UsageError(
            f"unknown audit area(s): {', '.join(sorted(unknown))}; "
            f"known areas: {', '.join(known_areas())}"
        )
    checks = [c for c in REGISTRY.values() if not wanted or c.area in wanted]
    if not wanted:
        checks += [
            _load_error_check(module, message, number)
            for number, (module, message) in enumerate(sorted(LOAD_ERRORS.items()), start=1)
        ]
    # Stable sort: within an area, checks keep the order their module declares them in.
    return sorted(checks, key=lambda c: area_rank(c.area))


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error_line(self) -> str:
        text = (self.stderr or self.stdout).strip()
        return text.splitlines()[0][:200] if text else f"exit status {self.returncode}"


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands on this host, optionally inside a prefix such as `ip netns exec NS`.

    Children run in their own session so a timeout kills the whole process group; output is
    decoded leniently (garbage bytes never crash a check); the locale is C so output parses.
    """

    def __init__(self, prefix: Sequence[str] = (), path_prepend: Sequence[Path] = ()) -> None:
        self.prefix = tuple(prefix)
        self.env = dict(os.environ, LC_ALL="C", LANG="C")
        self._live: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        if path_prepend:
            joined = os.pathsep.join(str(p) for p in path_prepend)
            self.env["PATH"] = f"{joined}{os.pathsep}{self.env.get('PATH', '')}"

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise ToolMissing(f"{argv[0]} is not installed")
        full = [*self.prefix, *argv]
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ToolMissing(f"cannot run {argv[0]}: {exc.strerror}") from None
        with self._lock:
            self._live.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(
                f"`{' '.join(argv)}` did not finish within {timeout:g}s (killed)"
            ) from None
        finally:
            with self._lock:
                self._live.discard(proc)
        return CommandResult(
            tuple(argv),
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    def kill_all(self) -> None:
        """Kill commands still running (a check abandoned at its timeout, an interrupt)."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            # Signal only: the thread waiting in communicate() reaps it (two readers of the
            # same pipes would race).
            _signal_group(proc)


def _signal_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group (its children too), else the command itself."""
    signal_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc)
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        log.warning("process %s did not die after SIGKILL", proc.pid)


class RecordedRunner:
    """Replays recorded outputs, for tests and for auditing evidence collected elsewhere.

    Keys are the command line joined with single spaces. A value is the stdout text, a
    CommandResult, or a callable taking (argv, timeout). Commands not recorded behave as
    missing tools.
    """

    def __init__(
        self,
        outputs: Mapping[
            str, str | CommandResult | Callable[[Sequence[str], float], CommandResult]
        ],
    ) -> None:
        self.outputs = dict(outputs)
        self.calls: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        with self._lock:
            self.calls.append(tuple(argv))
        value = self.outputs.get(" ".join(argv))
        if value is None:
            raise ToolMissing(f"{argv[0]} is not installed")
        if isinstance(value, str):
            return CommandResult(tuple(argv), 0, value)
        if isinstance(value, CommandResult):
            return value
        return value(argv, timeout)


class OfflineRunner:
    """For --root audits of a mounted image: this host's commands would describe this host."""

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        raise ToolMissing(f"`{argv[0]}` is not run when auditing a directory tree (--root)")


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
        """Like run, but a non-zero exit is a Skip naming the command's own complaint."""
        result = self.run(argv, timeout=timeout)
        if not result.ok:
            raise Skip(f"`{' '.join(argv)}` failed: {result.first_error_line()}")
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
                text = text.replace(secret, REDACTED)
            elif secret.lower() != secret and secret.lower() in text.lower():
                text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
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
    from sbtc_ops.config import secret_values

    return secret_values(settings)


def url_password(url: str) -> str | None:
    """The password of a URL as its client reads it (libpq's reading for database URLs)."""
    credentials = redact.url_credentials(url)
    return credentials[1] if credentials else None


# -- running --------------------------------------------------------------------------------


@dataclass
class AuditReport:
    findings: list[Finding]
    root: str
    started_at: datetime
    duration_s: float
    areas: list[str]

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for finding in self.findings:
            counts[finding.status.value] += 1
        return counts

    @property
    def score(self) -> int | None:
        """Hardening index like Lynis': severity-weighted share of passing checks, 0–100.

        A warning earns half its weight; fail and error earn nothing; skipped checks do
        not count either way (they were not evaluated).
        """
        earned = 0.0
        possible = 0
        for finding in self.findings:
            if finding.status is Status.SKIP:
                continue
            weight = Severity(finding.severity).weight
            possible += weight
            earned += weight * _EARNED[finding.status]
        return round(100 * earned / possible) if possible else None

    def at_or_above(self, threshold: Status) -> list[Finding]:
        levels = _FAIL_ON[threshold]
        return [f for f in self.findings if f.status in levels]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "score": self.score,
            "summary": self.counts(),
            "areas": self.areas,
            "findings": [finding.to_json() for finding in self.findings],
        }


_EARNED = {Status.PASS: 1.0, Status.WARN: 0.5, Status.FAIL: 0.0, Status.ERROR: 0.0}
# An error means the property could not be verified: it counts like a failure.
_FAIL_ON = {
    Status.WARN: {Status.WARN, Status.FAIL, Status.ERROR},
    Status.FAIL: {Status.FAIL, Status.ERROR},
}


def run_audit(
    ctx: HostContext,
    checks: Sequence[Check],
    *,
    concurrency: int | None = None,
    check_timeout_s: float | None = None,
) -> AuditReport:
    """Run checks concurrently, each bounded by its timeout; never raises for a check."""
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    run = _Run(
        ctx,
        concurrency or ctx.settings.audit.concurrency,
        check_timeout_s or ctx.settings.audit.check_timeout_s,
    )
    try:
        run.supervise(checks)
    finally:
        # Nothing outlives the audit: commands of abandoned checks, or all on Ctrl-C.
        kill_all = getattr(ctx.runner, "kill_all", None)
        if callable(kill_all):
            kill_all()
    findings = [run.results[item.id] for item in checks]
    areas = sorted({item.area for item in checks}, key=area_rank)
    return AuditReport(findings, str(ctx.root), started_at, time.perf_counter() - start, areas)


class _Run:
    """Starts checks up to the concurrency limit; turns those past their timeout into errors."""

    def __init__(self, ctx: HostContext, limit: int, default_timeout: float) -> None:
        self.ctx = ctx
        self.limit = limit
        self.default_timeout = default_timeout
        self.results: dict[str, Finding] = {}
        self.cond = threading.Condition()

    def worker(self, item: Check) -> None:
        finding = _execute(self.ctx, item)
        with self.cond:
            self.results.setdefault(item.id, finding)  # a late result after a timeout is dropped
            self.cond.notify_all()

    def supervise(self, checks: Sequence[Check]) -> None:
        pending = deque(checks)
        active: dict[str, tuple[Check, float]] = {}
        with self.cond:
            while pending or active:
                while pending and len(active) < self.limit:
                    item = pending.popleft()
                    active[item.id] = (item, time.monotonic())
                    # Daemon threads: a check stuck past its timeout must not keep the CLI alive.
                    threading.Thread(
                        target=self.worker, args=(item,), name=f"audit-{item.id}", daemon=True
                    ).start()
                next_deadline = self._reap(active)
                if active and not any(cid in self.results for cid in active):
                    self.cond.wait(timeout=max(0.0, next_deadline - time.monotonic()))

    def _reap(self, active: dict[str, tuple[Check, float]]) -> float:
        """Drop finished checks, time out overdue ones; returns the next deadline."""
        now = time.monotonic()
        next_deadline = now + 1.0
        for check_id, (item, began) in list(active.items()):
            timeout = item.timeout_s or self.default_timeout
            if check_id in self.results:
                del active[check_id]
            elif now - began >= timeout:
                outcome = Outcome(Status.ERROR, f"did not finish within {timeout:g}s")
                self.results[check_id] = _finding(self.ctx, item, outcome, now - began)
                del active[check_id]
            else:
                next_deadline = min(next_deadline, began + timeout)
        return next_deadline


def _execute(ctx: HostContext, item: Check) -> Finding:
    start = time.perf_counter()
    try:
        outcome = item.func(ctx)
    except Skip as exc:
        outcome = Outcome(Status.SKIP, str(exc))
    except (CommandTimeout, EvidenceError) as exc:
        outcome = Outcome(Status.ERROR, str(exc))
    except Exception as exc:
        log.debug("check %s raised", item.id, exc_info=True)
        outcome = Outcome(Status.ERROR, f"check could not run: {type(exc).__name__}: {exc}")
    return _finding(ctx, item, outcome, time.perf_counter() - start)


def _finding(ctx: HostContext, item: Check, outcome: Outcome, seconds: float) -> Finding:
    needs_fix = outcome.status in (Status.WARN, Status.FAIL, Status.ERROR)
    remediation = (outcome.remediation or item.remediation) if needs_fix else None
    return Finding(
        id=item.id,
        status=outcome.status,
        detail=ctx.scrub(outcome.detail),
        remediation=ctx.scrub(remediation) if remediation else None,
        section=item.section,
        duration_s=seconds,
        data=_scrub_data(ctx, outcome.data),
        area=item.area,
        title=item.title,
        severity=item.severity.value,
        rationale=item.rationale,
    )


def _scrub_data(ctx: HostContext, value: Any) -> Any:
    if isinstance(value, str):
        return ctx.scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub_data(ctx, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_data(ctx, v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
