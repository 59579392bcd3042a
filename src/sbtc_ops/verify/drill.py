"""The restore drill: the best-practice page's manual verification, automated and deepened.

locate → checksum → decrypt/decompress → throwaway cluster → restore → amcheck, schema,
migrations, row counts, the newest verified key → compare with the chain → report.
The chain is read concurrently with the restore. The cluster is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from sbtc_ops.attest.service import attest_drill
from sbtc_ops.backup import inuse
from sbtc_ops.backup.archive import (
    ArchiveError,
    LocatedBackup,
    PreparedArchive,
    StagedBackup,
    locate,
    prepare,
    stage,
)
from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.pgrestore import restore_argv, run_restore
from sbtc_ops.backup.plainsql import plain_dump_roles
from sbtc_ops.backup.service import storages_for
from sbtc_ops.backup.staging import Staging, StagingError
from sbtc_ops.backup.storage import LocalStorage, Storage
from sbtc_ops.config import Settings
from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.pg.cluster import ClusterSetup, SetupStep, ThrowawayCluster
from sbtc_ops.pg.limits import Breach
from sbtc_ops.pg.runas import resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox, isolation_of
from sbtc_ops.pg.schema_identity import CanonicalSchema, read_canonical_schema
from sbtc_ops.proc import InBackground, read_capped
from sbtc_ops.progress import echo
from sbtc_ops.results import CheckResult, Status, Stopwatch, timed_check
from sbtc_ops.stacks import (
    AggregateKeyReading,
    SignerDataReading,
    read_aggregate_key,
    read_signer_data,
)
from sbtc_ops.state import EventKind, StateStore
from sbtc_ops.verify import checks, reference
from sbtc_ops.verify.budget import DrillBudget, DrillGuard, archive_size
from sbtc_ops.verify.dbfacts import DatabaseFacts, read_and_neutralise
from sbtc_ops.verify.evidence import build_evidence
from sbtc_ops.verify.phases import Phases
from sbtc_ops.verify.report import VerifyReport

RESTORED_DB = "signer"
T = TypeVar("T")
# The drill's roles in the throwaway cluster (docs/threat-model.md). The archive is restored
# by RESTORE_ROLE, which owns the database and nothing else: no superuser, no membership in
# pg_execute_server_program / pg_read_server_files / pg_write_server_files, so restored code
# cannot run programs or touch files. The drill's own queries and pg_amcheck run as
# READER_ROLE (pg_read_all_data, EXECUTE on amcheck), with search_path pinned to pg_catalog.
ADMIN_ROLE = "sbtc_ops_admin"
RESTORE_ROLE = "sbtc_ops_restore"
READER_ROLE = "sbtc_ops_reader"
OUR_ROLES = (ADMIN_ROLE, RESTORE_ROLE, READER_ROLE)
AMCHECK_SCHEMA = checks.OUR_SCHEMAS[0]
# The reader's session, pinned at connection time (on top of the neutralised database and role
# settings, verify/dbfacts.py): what the drill's queries mean and that none of them can be
# cut short or write, whatever the restored archive set.
READER_OPTIONS = " ".join(
    f"-c {name}={value}"
    for name, value in (
        ("search_path", "pg_catalog"),
        ("default_transaction_read_only", "on"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("idle_session_timeout", "0"),
        ("client_min_messages", "warning"),
    )
)
# statement_timeout (query_canceled) and transaction_timeout (PostgreSQL 17+)
_TIMEOUT_STATES = ("57014", "25P04")
# pg_amcheck prints nothing for a clean database, a line or two per corrupt page otherwise:
# what it prints past this is not read (it is stopped, and the check fails).
AMCHECK_MAX_OUTPUT = 1 << 20


@dataclass(frozen=True)
class VerifyRequest:
    backup_ref: str | None
    latest: bool = False
    kind: str = "full"  # with latest: full backups, or "dkg-only" exports
    expected_key: bytes | None = None
    stacks_urls: list[str] | None = None
    signer_secret: bytes | None = None
    keep_cluster: bool = False
    locations: list[str] | None = None
    # Parallel restore jobs: no default here; the caller picks (verify.jobs, --jobs).
    jobs: int = field(kw_only=True)
    # The restore gate (verify/gate.py): called while the drill's cluster and the checked,
    # prepared archive still exist; no chain is read and no verify is recorded.
    gate: Callable[[GateContext], None] | None = field(default=None, kw_only=True)


# What a backup must pass before `restore` writes it anywhere (archive.checksum may be skipped:
# a bare dump has no manifest).
GATE_CHECKS = ("restore.complete", "schema.reference", "schema.identity")


@dataclass(frozen=True)
class GateContext:
    cluster: ThrowawayCluster
    prepared: PreparedArchive
    located: LocatedBackup
    results: dict[str, CheckResult]

    @property
    def proven(self) -> bool:
        """The archive restored cleanly and its schema equals the reference."""
        return all(
            check in self.results and self.results[check].status == Status.PASS
            for check in GATE_CHECKS
        )


Phase = Callable[[str], Any]


@dataclass
class _ChainFutures:
    key: Future[AggregateKeyReading] | None
    signer: Future[SignerDataReading] | None


@dataclass
class _Work:
    """What one drill works on once the backup is found: where it is, its staging directory,
    the copy-and-hash running in the background, and the chain reads."""

    located: LocatedBackup
    staging: Staging
    staged: InBackground[tuple[CheckResult, StagedBackup]]
    chain: _ChainFutures


class Drill:
    """One verification run. `run()` returns the report; it never leaves a cluster behind."""

    def __init__(
        self, settings: Settings, request: VerifyRequest, phase: Callable[[str], Any] | None = None
    ) -> None:
        self.settings = settings
        self.request = request
        self.report = VerifyReport(backup=request.backup_ref or "latest")
        self.phases = Phases(self.report.timings, phase)
        if request.expected_key is not None:
            self.report.key_source = checks.GIVEN_BY_HAND
            self.report.expected_aggregate_key = request.expected_key.hex()
        self._results: dict[str, CheckResult] = {}
        self._key_verdict = "error"
        self._shown_name: str | None = None
        self._guard: DrillGuard | None = None  # the budgets, from locate to the end
        self._started = time.monotonic()
        self.schema: CanonicalSchema | None = None  # the restored schema, once read
        self._kept: list[str] = []  # --keep-cluster: said once the verdict is known
        # The unprivileged user the server and every client that reads the archive run as.
        self.run_as = resolve_run_as(settings.postgres.run_as)
        self.located: LocatedBackup | None = None  # once found (for the attestation)
        self.answered_urls: list[str] = []  # Stacks endpoints that answered the key read

    # -- plumbing ----------------------------------------------------------------------------

    def _add(self, result: CheckResult) -> None:
        self._results[result.id] = result

    def _finish_checks(self, why_not_run: str) -> None:
        for check_id in checks.CHECK_IDS:
            if check_id not in self._results:
                self._results[check_id] = checks.skipped(check_id, why_not_run)
        self.report.checks = [self._results[i] for i in checks.CHECK_IDS]

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> VerifyReport:
        try:
            return self._run()
        except (KeyboardInterrupt, UsageError):
            raise  # stopped, or a bad argument: not a verification of anything
        except Exception as exc:
            # A verify that could not finish is still a verify the history and the status
            # page must show (outcome "error" does not mark the backup failed).
            self._record_failure(exc)
            _announce_kept(self._kept, "error")  # a kept cluster is never left unannounced
            raise

    def _record_failure(self, exc: Exception) -> None:
        if self.request.gate is not None:
            return  # a restore, not a verify: restore records its own outcome
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        with StateStore.open(self.settings.state_dir) as store:
            store.record_event(
                EventKind.VERIFY, self.report.backup, "error", {"verdict": "error", "error": reason}
            )

    def _notice_run_as(self) -> None:
        """Once per state directory: say which user runs the throwaway clusters, and why."""
        if self.run_as.is_current:
            return
        with StateStore.open(self.settings.state_dir) as store:
            if store.last_event(EventKind.NOTICE, "run-as") is not None:
                return
            store.record_event(EventKind.NOTICE, "run-as", "shown", {"user": self.run_as.name})
        advice = (
            "; create a dedicated user for it (useradd --system --shell /usr/sbin/nologin "
            "sbtc-ops) rather than sharing nobody"
            if self.run_as.name == "nobody"
            else ""
        )
        echo(
            f"note: throwaway PostgreSQL clusters, and every program that reads a backup, run "
            f"as the unprivileged user {self.run_as.name!r} (PostgreSQL refuses root, and a "
            f"backup's contents never run as root; set postgres.run_as to choose){advice}. "
            "This note is shown once."
        )

    def _notice_sandbox(self) -> None:
        """On every run: the sandbox's layers in the report, and a warning when some are
        missing (docs/threat-model.md says what each deployment gets)."""
        isolation = isolation_of(self.run_as)
        self.report.sandbox = isolation.as_dict()
        if not isolation.full:
            echo(
                f"warning: the restore drill's sandbox ({isolation.mode}) lacks "
                f"{', '.join(isolation.missing())}: {isolation.why}"
            )

    def _run(self) -> VerifyReport:
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chain")
        locks = ExitStack()  # shared per-backup locks: no prune deletes what is being read
        try:
            with (
                self.phases.phase("total", announce=False),
                Staging(self.run_as, prefix="sbtc-ops-verify-") as staging,
            ):
                self._drill(staging, pool, locks)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            locks.close()
        self.report.verdict = self._verdict()
        self._record()
        _announce_kept(self._kept, self.report.verdict)
        return self.report

    def _drill(self, staging: Staging, pool: ThreadPoolExecutor, locks: ExitStack) -> None:
        with self.phases.phase("locate"):
            located = self._locate(staging.root / "fetched", locks)
        self.located = located
        # Only once the backup is found: a bad argument must not wait for (or cause)
        # a read from every configured Stacks endpoint (nor a note about clusters).
        self._notice_run_as()
        self._notice_sandbox()
        chain = self._start_chain_reads(pool)
        self.report.backup = located.backup_id or located.ref
        self._shown_name = located.root.name
        if located.manifest is not None:
            self.report.manifest = located.manifest.model_dump(mode="json")
        # Staging the archive (copied and hashed in one pass) overlaps creating the
        # cluster; nothing is restored before the checksum has passed.
        staged = InBackground(lambda: self._stage(located, staging), name="stage")
        try:
            restored = self._guarded(_Work(located, staging, staged, chain))
        finally:
            # However the drill ended (a breach, an error), the copy stops before its
            # directory is removed: nothing keeps writing into a deleted file.
            staging.stop.set()
            _wait_quietly(staged)
        if self._over_budget():
            self._finish_checks("not run: the drill went over its budget")
        elif restored:
            self._finish_checks("not run: an earlier check failed")
        else:
            self._collect_chain(chain, None, [])
            self._finish_checks("not run: the archive failed before restore")

    # -- budgets (verify/budget.py, issue 21) -----------------------------------------------

    def _guarded(self, work: _Work) -> bool:
        """Staging's decryption and decompression, the restore and its checks, under the
        drill's budgets. A breach kills the sandbox and staging's children and stops the
        copy, so whatever the drill waited for fails: that failure is the breach, not an
        error."""
        budget = DrillBudget.for_archive(self.settings.verify, archive_size(work.located))
        guard = self._guard = DrillGuard(budget, self.run_as.uid, self._started)
        work.staging.put_under(guard.limits)
        guard.start(work.staging.root)
        try:
            return self._restore_and_check(work)
        except Exception:
            if guard.breach is None:
                raise
            return True
        finally:
            guard.close(keep=self.request.keep_cluster and guard.breach is None)
            self._add(guard.result())
            self.report.budgets = guard.to_json()

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """Reads of the restored database past their bounds are budget breaches."""
        assert self._guard is not None
        try:
            yield
        except checks.OversizedData as exc:
            self._guard.record(Breach("memory", str(exc), exc.limit, exc.size))
        except psycopg.Error as exc:
            if exc.sqlstate not in _TIMEOUT_STATES:
                raise
            timeout = self._guard.budget.query_timeout_s
            detail = f"a query of the restored database ran past the query timeout ({timeout:g} s)"
            self._guard.record(Breach("time", detail, timeout, timeout))

    def _over_budget(self) -> bool:
        return self._guard is not None and self._guard.breach is not None

    def _locate(self, fetch_dir: Path, locks: ExitStack) -> LocatedBackup:
        ref = self.request.backup_ref
        if ref is None and not self.request.latest:
            raise UsageError("name a BACKUP (id or path) or pass --latest")
        # A path that does not exist and is no backup id is reported as such by locate(),
        # not as a missing backup location.
        storages = (
            []
            if ref and (Path(ref).exists() or not is_backup_id(ref))
            else storages_for(self.settings, self.request.locations)
        )
        state_dir = self.settings.state_dir
        if ref and storages and not self.request.latest:
            inuse.hold_by_id(locks, state_dir, storages, ref)
        located = locate(
            ref or "", storages, fetch_dir, latest=self.request.latest, kind=self.request.kind
        )
        inuse.hold_located(locks, state_dir, located)
        return located

    def _start_chain_reads(self, pool: ThreadPoolExecutor) -> _ChainFutures:
        if self.request.expected_key is not None or self.request.gate is not None:
            return _ChainFutures(None, None)
        urls = self.request.stacks_urls or None
        return _ChainFutures(
            pool.submit(read_aggregate_key, self.settings, urls),
            pool.submit(read_signer_data, self.settings, urls),
        )

    def _stage(self, located: LocatedBackup, staging: Staging) -> tuple[CheckResult, StagedBackup]:
        watch = Stopwatch()
        staged = stage(located, staging)
        result = checks.archive_checksum(located.manifest, staged.problems)
        return result.timed(watch.elapsed()), staged

    def _check_archive(self, work: _Work) -> PreparedArchive | None:
        """The staged archive once its checksum passed, decrypted and decompressed; None
        (its check recorded) when it fails. Past a breach: StagingStopped."""
        self.phases.announce("checksum")
        try:
            with self.phases.phase("checksum.wait", announce=False):
                result, staged = work.staged.result()
        except StagingError as exc:
            self._add(checks.archive_checksum(work.located.manifest, [str(exc)]))
            return None
        # "checksum" is the hashing (alongside initdb); the wait for it once the cluster
        # is up is usually nil.
        self.phases.add("checksum", result.duration_s)
        self._add(result)
        if result.status.is_problem:
            return None
        watch = Stopwatch()
        try:
            with self.phases.phase("prepare"):
                prepared = prepare(
                    staged,
                    work.staging,
                    self.settings.backup.identity_file,
                    max_expanded_bytes=self._max_expanded(),
                )
        except ArchiveError as exc:
            self._add(checks.restore_complete(1, [str(exc)], "sbtc-ops").timed(watch.elapsed()))
            return None
        self.report.archive = {"format": prepared.format, "steps": prepared.steps}
        return prepared

    def _max_expanded(self) -> int | None:
        mb = self.settings.backup.max_expanded_mb
        return mb << 20 if mb else None

    def _restore_and_check(self, work: _Work) -> bool:
        """False when the archive failed before anything was restored."""
        guard = self._guard
        assert guard is not None
        with (
            self.phases.phase("cluster"),
            ThrowawayCluster.from_settings(
                self.settings,
                run_as=self.run_as,
                superuser=ADMIN_ROLE,
                keep=self.request.keep_cluster,
                announce=self._kept.append,
                limits=guard.limits,  # BUDGET HOOK: the sandbox's rlimits, cgroup, kill list
                extra_settings=guard.server_settings(),
                setup=_drill_setup(),
            ) as cluster,
        ):
            guard.watch(cluster.base_dir)  # BUDGET HOOK: the data directory's disk use
            # A kept cluster is reached as the reader, never as the superuser: the database
            # is the archive's, and may be hostile (docs/threat-model.md).
            cluster.kept_login = (READER_ROLE, RESTORED_DB, READER_OPTIONS)
            self.report.timings.update({f"cluster.{k}": v for k, v in cluster.timings.items()})
            prepared = self._check_archive(work)
            if prepared is None or self._over_budget():
                cluster.keep = False  # nothing was restored: nothing worth keeping
                return prepared is not None
            self._restore_then_check(cluster, prepared, work)
        return True

    def _restore_then_check(
        self, cluster: ThrowawayCluster, prepared: PreparedArchive, work: _Work
    ) -> None:
        """Restore the prepared archive into the cluster, then every check that reads it (and
        the restore gate, for `restore`)."""
        guard = self._guard
        assert guard is not None
        has_amcheck = _has_amcheck(cluster)
        with self.phases.phase("restore") as watch:
            run = self._restore(cluster, prepared)
        guard.note_errors(run.errors)  # BUDGET HOOK: EFBIG, temp_file_limit
        if self._over_budget():
            return
        tool = "psql" if prepared.format == "plain" else "pg_restore"
        self._add(checks.restore_complete(run.returncode, run.errors, tool).timed(watch.elapsed()))
        facts = _neutralise(cluster)
        amcheck = self._start_amcheck(cluster, has_amcheck)
        with self.phases.phase("checks"):
            self._read_restored(cluster, work.located, work.chain, facts)
        with self.phases.phase("amcheck"):
            self._finish_amcheck(cluster, amcheck)
        if self.request.gate is not None:
            self.request.gate(GateContext(cluster, prepared, work.located, dict(self._results)))

    def _identity_checks(self, conn: psycopg.Connection[Any], facts: list[str]) -> None:
        """schema.reference and schema.identity: the whole restored schema equals the
        reference of its migration level (verify/reference.py)."""
        watch = Stopwatch()
        migrations = reference.restored_migrations(conn)
        found = reference.find_reference(self.settings.state_dir, migrations or [])
        self._add(checks.schema_reference(migrations, found).timed(watch.elapsed()))
        watch = Stopwatch()
        actual, error = None, None
        try:
            actual = read_canonical_schema(conn, include_deployment=True)
        except psycopg.Error as exc:
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        restore_ok = self._results["restore.complete"].status == Status.PASS
        identity = checks.schema_identity(actual, found, restore_ok, error, facts)
        self._add(identity.timed(watch.elapsed()))
        self.schema = actual

    def _read_restored(
        self,
        cluster: ThrowawayCluster,
        located: LocatedBackup,
        chain: _ChainFutures,
        facts: DatabaseFacts,
    ) -> None:
        """The checks that read the restored database, as the reader. Its connection is opened
        here, inside the error handling: a refused connection is a failed check, not a crash.
        Past the query timeout, or an oversized value, the drill is over budget (_bounded)."""
        rows: list[checks.DkgRow] | None = None
        newest: bytes | None = None
        assert self._guard is not None
        options = f"{READER_OPTIONS} {self._guard.reader_timeout_options()}"  # BUDGET HOOK
        with ExitStack() as stack, self._bounded():
            try:
                conn = stack.enter_context(
                    cluster.connect(RESTORED_DB, user=READER_ROLE, options=options)
                )
                self._identity_checks(conn, facts.findings)
                rows = self._database_checks(conn, located)
                newest = checks.newest_verified_key(conn) if rows is not None else None
            except psycopg.Error as exc:
                if exc.sqlstate in _TIMEOUT_STATES:
                    raise  # a budget breach (_bounded), not a finding
                self._add(checks.database_error(self._results, exc))
                rows, newest, conn = None, None, None
            self._collect_chain(chain, newest, rows or [])
            if conn is not None:
                self._add(timed_check(self._shares_decrypt, conn, newest))

    def _shares_decrypt(self, conn: psycopg.Connection[Any], newest: bytes | None) -> CheckResult:
        try:
            return checks.shares_decrypt(conn, newest, self.request.signer_secret)
        except psycopg.Error as exc:
            if exc.sqlstate in _TIMEOUT_STATES:
                raise
            return checks.database_error(self._results, exc, "dkg.shares_decrypt")

    def _restore(self, cluster: ThrowawayCluster, prepared: PreparedArchive) -> Any:
        jobs = self.request.jobs if prepared.format in ("custom", "directory") else 1
        plain = prepared.path if prepared.format == "plain" else None
        if plain is not None:
            # pg_restore has --no-owner/--no-privileges; a plain dump replayed by psql does
            # not, so its owners and grantees must exist or every ALTER … OWNER TO fails.
            _create_roles(cluster, plain_dump_roles(plain))
        conninfo = cluster.conninfo(RESTORED_DB, user=RESTORE_ROLE)
        argv = restore_argv(cluster.binaries, prepared, conninfo, jobs=jobs, strict=False)
        return run_restore(
            argv,
            cluster.client_env(RESTORE_ROLE),
            cluster.sandbox.exposing(ro=(prepared.path,)),
            plain,
            self._shown_name,
            progress_of=prepared.path,
        )

    def _start_amcheck(
        self, cluster: ThrowawayCluster, has_amcheck: bool
    ) -> tuple[subprocess.Popen[bytes], Stopwatch] | None:
        if not cluster.binaries.has("pg_amcheck") or not has_amcheck:
            self._add(checks.skipped("restore.amcheck", "pg_amcheck or amcheck is not available"))
            return None
        argv = [
            str(cluster.binaries.pg_amcheck),
            "--no-password",
            f"--jobs={self.request.jobs}",
            RESTORED_DB,  # reached as READER_ROLE over the socket (client_env)
        ]
        proc = cluster.sandbox.popen(
            argv,
            env={**cluster.client_env(READER_ROLE), "PGOPTIONS": READER_OPTIONS},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return proc, Stopwatch()

    def _finish_amcheck(
        self, cluster: ThrowawayCluster, started: tuple[subprocess.Popen[bytes], Stopwatch] | None
    ) -> None:
        if started is not None:
            proc, watch = started
            self._add(amcheck_result(proc, cluster.sandbox).timed(watch.elapsed()))

    def _database_checks(self, conn: Any, located: LocatedBackup) -> list[checks.DkgRow] | None:
        schema = timed_check(checks.schema_present, conn)
        self._add(schema)
        if schema.status != Status.PASS:
            return None
        self._add(timed_check(checks.migrations_present, conn, located.manifest))
        self._add(timed_check(checks.rows_match_manifest, conn, located.manifest))
        watch = Stopwatch()
        rows = checks.read_dkg_rows(conn)
        newest = checks.newest_verified_key(conn)
        self._add(checks.verified_key_present(rows, newest).timed(watch.elapsed()))
        return rows

    def _collect_chain(
        self, chain: _ChainFutures, newest: bytes | None, rows: list[checks.DkgRow]
    ) -> None:
        """The on-chain (or given) key against the restored one: the key checks, the report's
        keys and the newest row's signer set."""
        onchain, signer_data, why_no_chain = self._chain_answers(chain)
        by_hand = self.request.expected_key is not None
        self.report.db_aggregate_key = newest.hex() if newest else None
        row = next((r for r in rows if r.aggregate_key == newest), None)
        if row is not None:
            self.report.dkg_newest = {
                "signer_set": sorted(k.hex() for k in row.signer_set),
                "threshold": row.threshold,
                "created_at": row.created_at,
            }
        if not by_hand:  # only a chain reading is an on-chain key (report, state, retention)
            self.report.onchain_aggregate_key = onchain.hex() if onchain else None
            if onchain is not None:
                self._remember_chain_key(onchain)
        if newest is None and not rows and "dkg.verified_key_present" not in self._results:
            return
        watch = Stopwatch()
        reference = checks.GIVEN_BY_HAND if by_hand else checks.ON_CHAIN
        history = set() if by_hand else self._history()
        result, self._key_verdict = checks.matches_chain(newest, rows, onchain, history, reference)
        self._add(result.timed(watch.elapsed()))
        self._add(checks.signer_set_matches(newest, rows, signer_data, why_no_chain))

    def _chain_answers(self, chain: _ChainFutures) -> tuple[bytes | None, Any, str]:
        """(the key to compare with, the agreed signer data, why there is none), with the
        endpoints' check recorded."""
        watch = Stopwatch()
        if chain.key is None or chain.signer is None:
            self._add(checks.endpoints_agree([], self.request.expected_key).timed(watch.elapsed()))
            return (
                self.request.expected_key,
                None,
                "--expected-key given: the signer set was not read",
            )
        with self.phases.phase("chain"):
            key_reading = chain.key.result()
            signer_reading = chain.signer.result()
        outcomes = [(o.display_url, _key_text(o.value), o.error) for o in key_reading.outcomes]
        self.report.chain_endpoints = [
            {"endpoint": url, "value": value, "error": error} for url, value, error in outcomes
        ]
        self.answered_urls = [o.url for o in key_reading.outcomes if o.error is None]
        self._add(checks.endpoints_agree(outcomes, None).timed(watch.elapsed()))
        why_no_chain = "get-current-signer-data: no agreed answer"
        if key_reading.not_set:
            why_no_chain = "the registry has no aggregate key yet"
        return key_reading.agreed_key, signer_reading.agreed, why_no_chain

    def _history(self) -> set[bytes]:
        with StateStore.open(self.settings.state_dir) as store:
            return {bytes.fromhex(e.subject) for e in store.events(EventKind.CHAIN_KEY, limit=1000)}

    def _remember_chain_key(self, key: bytes) -> None:
        with StateStore.open(self.settings.state_dir) as store:
            if store.last_event(EventKind.CHAIN_KEY, key.hex()) is None:
                store.record_event(EventKind.CHAIN_KEY, key.hex(), "seen")

    # -- verdict and record -------------------------------------------------------------------

    def _verdict(self) -> str:
        failed = {c.id for c in self.report.checks if c.status.is_problem}
        implied = checks.verdict_for_failures(failed)
        if implied is not None:
            return implied.value
        if self._key_verdict in ("stale", "mismatch", "match"):
            return self._key_verdict
        return "error"

    def _record(self) -> None:
        if self.request.gate is not None:
            return
        report = self.report
        outcome = "ok" if report.ok else report.verdict
        with StateStore.open(self.settings.state_dir) as store:
            store.record_event(
                EventKind.VERIFY,
                report.backup,
                outcome,
                {
                    "verdict": report.verdict,
                    "db_aggregate_key": report.db_aggregate_key,
                    "onchain_aggregate_key": report.onchain_aggregate_key,
                    "expected_aggregate_key": report.expected_aggregate_key,
                    "key_source": report.key_source,
                    "failed_checks": [c.id for c in report.checks if c.status.is_problem],
                    "duration_s": round(report.timings.get("total", 0.0), 3),
                    "sandbox": report.sandbox,  # for the audit (BAK-006)
                },
            )


def _neutralise(cluster: ThrowawayCluster) -> DatabaseFacts:
    """Read, then reset, what the restore attached to the database and roles (settings,
    connection limit, ALLOW_CONNECTIONS), as the superuser from the `postgres` database."""
    try:
        with cluster.connect() as admin:
            return read_and_neutralise(admin, RESTORED_DB)
    except psycopg.Error as exc:
        raise SbtcOpsError(f"could not reset the restored database's settings: {exc}") from exc


def _drill_setup() -> ClusterSetup:
    """The drill's roles, the database the archive goes into (owned by the restore role) and
    amcheck in a schema of ours: made before anything is restored (so nothing restored can
    interfere), and kept in the drill's cluster template (pg/template.py). template0 and
    template1 are dropped: the drill creates no other database, and a template without them
    is a third smaller, i.e. faster to copy (a restored `\\connect template1` finds none)."""

    def ident(name: str) -> str:
        return sql.Identifier(name).as_string(None)

    restore, reader, db = ident(RESTORE_ROLE), ident(READER_ROLE), ident(RESTORED_DB)
    schema = ident(AMCHECK_SCHEMA)
    role = "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
    in_admin = [
        role.format(restore),
        role.format(reader),
        f"GRANT pg_read_all_data TO {reader}",
        f"CREATE DATABASE {db} TEMPLATE template0 ENCODING 'UTF8' OWNER {restore}",
    ]
    in_restored = [
        f"CREATE SCHEMA {schema}",
        f"CREATE EXTENSION amcheck SCHEMA {schema}",
        f"GRANT USAGE ON SCHEMA {schema} TO {reader}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {reader}",
    ]
    drops = [
        statement.format(template)
        for template in ("template1", "template0")
        for statement in ("ALTER DATABASE {} IS_TEMPLATE false", "DROP DATABASE {}")
    ]
    return ClusterSetup(
        (
            *(SetupStep("postgres", s) for s in in_admin),
            *(SetupStep(RESTORED_DB, s, optional="EXTENSION" in s) for s in in_restored),
            *(SetupStep("postgres", s) for s in drops),
        )
    )


def _has_amcheck(cluster: ThrowawayCluster) -> bool:
    """Whether the setup could install amcheck (asked before anything is restored)."""
    with cluster.connect(RESTORED_DB) as conn:
        row = conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck'")
        return row.fetchone() is not None


# Names CREATE ROLE refuses (reserved), whether the dump quotes them or not: such a name in a
# dump is never made; its statements fail, and the restore reports them.
MAX_DUMP_ROLES = 100
_RESERVED_ROLES = frozenset({"public", "none", "current_user", "session_user", "current_role"})


def _creatable(role: str) -> bool:
    return (
        role.lower() not in _RESERVED_ROLES
        and not role.startswith("pg_")
        and role not in OUR_ROLES
        and 0 < len(role.encode()) < 64  # NAMEDATALEN: longer names would be truncated
        and "\0" not in role
    )


def _create_roles(cluster: ThrowawayCluster, roles: set[str]) -> None:
    """The roles a plain dump names, as plain NOLOGIN roles the restore role may act as (and
    that may create in `public`), so its ALTER … OWNER TO and GRANTs succeed. Roles of ours
    and reserved names are never made or granted: a dump naming them fails on that
    statement. Names are always quoted (sql.Identifier); one the server refuses is skipped."""
    # A signer's dump names a role or two; a dump naming thousands gets the first ones only
    # (the statements of the others fail, and the restore reports them).
    wanted = sorted(r for r in roles if _creatable(r))[:MAX_DUMP_ROLES]
    if not wanted:
        return
    made = []
    with cluster.connect() as conn:
        existing = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
        for role in wanted:
            name = sql.Identifier(role)
            try:
                if role not in existing:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(name))
                    conn.execute(
                        sql.SQL("GRANT {} TO {}").format(name, sql.Identifier(RESTORE_ROLE))
                    )
            except psycopg.Error:
                continue
            made.append(role)
    with cluster.connect(RESTORED_DB) as conn:
        for role in made:
            conn.execute(
                sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role))
            )


def _announce_kept(messages: list[str], verdict: str) -> None:
    """--keep-cluster: how to reach the kept cluster and remove it, after the verdict; a loud
    warning unless the backup was proven (`match`)."""
    if not messages:
        return
    if verdict != checks.Verdict.MATCH:
        echo(
            f"WARNING: the kept database holds a backup with verdict {verdict!r}: treat it as "
            "hostile. Connect only as shown (the unprivileged reader, search_path pinned, "
            "read-only), never as a superuser, never from a signer host; remove it when done."
        )
    for message in messages:
        echo(message)
    echo(f"  the restored backup is the database {RESTORED_DB!r}")


def amcheck_result(
    proc: subprocess.Popen[bytes], sandbox: Sandbox, max_output: int = AMCHECK_MAX_OUTPUT
) -> CheckResult:
    """The check of a pg_amcheck run: its report read up to `max_output` bytes (a clean
    database prints nothing, and a restored archive must not make us hold without end what
    it prints: over the cap it is stopped, and the check fails). The deadline bounds its time
    (the watchdog kills the sandbox)."""
    assert proc.stdout is not None
    with sandbox.reaped(proc):
        with proc.stdout:
            output, more = read_capped(proc.stdout, max_output)
        if more:
            sandbox.kill(proc)
        proc.wait()
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    return checks.amcheck(proc.returncode, lines, cut_at=max_output if more else None)


def _wait_quietly(work: InBackground[Any]) -> None:
    """Wait for background work that was told to stop; what it raised was already reported
    (or is moot now)."""
    with contextlib.suppress(Exception):  # reported where the drill waited for it, if at all
        work.result()


def _key_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return "not set" if value == b"\x00" else value.hex()


def run_verify(
    settings: Settings, request: VerifyRequest, phase: Callable[[str], Any] | None = None
) -> VerifyReport:
    if request.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    started = time.time()
    drill = Drill(settings, request, phase)
    report = drill.run()
    if request.gate is None:  # a restore's gate compares no key: no drill evidence
        _attest(settings, request, drill, (started, time.time()))
    return report


def _attest(
    settings: Settings, request: VerifyRequest, drill: Drill, window: tuple[float, float]
) -> None:
    """Every drill that reached a verdict leaves signed evidence beside its backup."""
    storages = _attestation_storages(settings, request, drill.located)
    evidence = build_evidence(
        settings, drill.report, drill.located, storages, drill.answered_urls, window
    )
    drill.report.chain_tip = evidence.chain.get("tip")
    outcome = attest_drill(evidence, storages, settings.state_dir, settings.attest.signing_key)
    drill.report.attestation = outcome.to_json()


def _attestation_storages(
    settings: Settings, request: VerifyRequest, located: LocatedBackup | None
) -> list[Storage]:
    """Where the backup's attestations go: the locations holding it (a backup named by path
    inside a repository directory: that directory)."""
    if located is None or located.backup_id is None:
        return []
    if located.storage is None:
        root = located.root if located.root.is_dir() else located.root.parent
        return [LocalStorage(root.parent)] if root.name == located.backup_id else []
    try:
        return storages_for(settings, request.locations)
    except SbtcOpsError:
        return []
