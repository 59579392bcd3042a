"""The restore drill's sandbox where sbtc-ops is deployed (issue 21, items 3 and 6).

The real `sbtc-ops verify` of a real (age-encrypted) backup runs as root (the CLI), and as an
unprivileged service user made by the test, owning the state, the backups and the identity
(0700/0600) as the systemd unit's user does: with a /etc/subuid range (bwrap-subuid) and
without one (bwrap-userns, which the unit gets: its NoNewPrivileges makes newuidmap
unusable). While each drill runs, /proc is sampled: every process that reads the archive
(postgres, pg_restore, psql, decompressors) must run as another uid than the service's (where
the mode promises it), and the identity, the signer's configuration and the state directory
must not exist in its mount namespace (/proc/<pid>/root). A probe run through Sandbox itself
checks the same and the network in each mode. The compose service's case is in
tests/test_docker_deploy_compose.py (Docker lab).

kill -9 (item 6): sbtc-ops killed mid-restore leaves its staging and cluster directories,
which the cluster's user cannot read outside the sandbox; the next run reaps them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyrage
import pytest

from sbtc_ops.audit.service import audit_host
from sbtc_ops.discover.load import load_settings
from sbtc_ops.pg.runas import SANDBOX_USERNS_ENV, resolve_run_as
from sbtc_ops.pg.sandbox import Mode, Sandbox
from sbtc_ops.results import Status
from tests.support.cli import CliResult, clean_env, communicate_sampling, sbtc_ops_executable
from tests.support.pg import SourceServer, assert_no_postgres_left, new_signer_database
from tests.support.verify import (
    FAST_CHAIN_ENV,
    copy_schema_references,
    gzip_file,
    operator_dump,
    stacks_node_for,
    take_backup,
)
from tests.test_deploy_files import unit

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users and samples /proc as root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

DBNAME = "sandbox_deployments"
WITH_SUBUID, WITHOUT_SUBUID = "sbtcsb-svc", "sbtcsb-nosub"
SANDBOX_USER = "sbtcsb-box"  # the unit's dedicated sandbox user (sbtc-ops-sandbox)
SUBUID_START = 910000  # the test user's range: far from any other user's
READERS = {"postgres", "pg_restore", "psql", "pg_amcheck", "initdb", "gzip", "zstd"}
SIGNER_CONFIG = 'db_endpoint = "postgresql://x@y/z"\n[signer]\nprivate_key = "%s"\n' % ("ab" * 32)


@dataclass
class Area:
    root: Path
    repo: Path
    backup_id: str
    identity: str
    stacks_url: str
    plain_dump: Path


@pytest.fixture(scope="module")
def area(source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Area]:
    root = tmp_path_factory.mktemp("sandbox-deployments")
    url, facts = new_signer_database(source_server, target_mb=2.0, seed=77, dbname=DBNAME)
    identity = pyrage.x25519.Identity.generate()
    repo = root / "repo"
    backup_id, _ = take_backup(url, repo, root / "state", "--recipient", str(identity.to_public()))
    plain = operator_dump(source_server, DBNAME, root / "signer.sql")
    with stacks_node_for(facts) as node:
        yield Area(root, repo, backup_id, str(identity), node.url, plain)


def _create_user(name: str, subuid: bool) -> pwd.struct_passwd:
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(
        [
            *("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"),
            *("--shell", "/usr/sbin/nologin", name),
        ],
        check=True,
    )
    if subuid:
        ids = f"{SUBUID_START}-{SUBUID_START + 65535}"
        subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, name], check=True)
    return pwd.getpwnam(name)


_MADE: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_launcher() -> Iterator[None]:
    yield
    for path in _MADE:
        shutil.rmtree(path, ignore_errors=True)
    _MADE.clear()
    _service_python.cache_clear()


@functools.lru_cache(maxsize=1)
def _service_python() -> str:
    """An interpreter the service user can run *and re-run* (sbtc-ops re-executes
    sys.executable for its decryption child). A venv's python is a link to the system's; the
    test venv's may point into /root (pyenv), which a service user cannot reach: then a venv
    on the system's python of the same minor version, seeing the test venv's packages."""
    launcher = Path(sys.executable)
    if not str(launcher.resolve()).startswith("/root/"):
        return str(launcher)
    system = Path("/usr/bin/python3")
    version = subprocess.run(
        [str(system), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip("no interpreter a service user can run for this venv's packages")
    venv = Path(tempfile.mkdtemp(prefix="sbtcsb-python-", dir="/tmp"))
    _MADE.append(venv)
    venv.chmod(0o755)
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True)
    site_dir = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    pth = next(venv.glob("lib/python3*/site-packages")) / "test-venv.pth"
    pth.write_text(f"import site; site.addsitedir({str(site_dir)!r})\n")
    return str(venv / "bin" / "python3")


def _sbtc_ops_as_service() -> list[str]:
    script = "import sys; from sbtc_ops.cli import main; sys.argv[0] = 'sbtc-ops'; main()"
    return [_service_python(), "-c", script]


@pytest.fixture(scope="module")
def service_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    if shutil.which("newuidmap") is None:
        pytest.skip("newuidmap (Debian: uidmap) is not installed")
    users = {
        WITH_SUBUID: _create_user(WITH_SUBUID, True),
        WITHOUT_SUBUID: _create_user(WITHOUT_SUBUID, False),
        SANDBOX_USER: _create_user(SANDBOX_USER, False),
    }
    try:
        yield users
    finally:
        for name in users:
            subprocess.run(["userdel", name], capture_output=True, check=False)


@contextlib.contextmanager
def sandbox_userns(service: str) -> Iterator[dict[str, str]]:
    """What the shipped unit does, its own lines run as root: ExecStartPre=+ keeps the user
    namespace mapping the service and the sandbox user at a path, Environment= tells the
    service, ExecStopPost=+ releases it. The test's users and directory stand in for
    sbtc-ops, sbtc-ops-sandbox and /run/sbtc-ops."""
    run_dir = Path(tempfile.mkdtemp(prefix="sbtcsb-run-", dir="/tmp"))
    run_dir.chmod(0o755)  # as /run/sbtc-ops-sandbox: root's, readable
    directives = unit("sbtc-ops.service")

    def command(line: str) -> list[str]:
        # (Entering PID 1's mount namespace is systemd's part, which only a real systemd
        # shows: tests/test_systemd_unit.py. Here the test's own stands in for it.)
        line = line.removeprefix("+").removeprefix("/usr/bin/nsenter --mount=/proc/1/ns/mnt -- ")
        line = line.replace("/run/sbtc-ops-sandbox/", f"{run_dir}/")
        argv = shlex.split(line.replace("/usr/local/bin/sbtc-ops", sbtc_ops_executable()))
        users = {"--service-user": service, "--sandbox-user": SANDBOX_USER}
        return [users.get(before, arg) for before, arg in zip(["", *argv], argv, strict=False)]

    def run(line: str) -> None:
        done = subprocess.run(command(line), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    told = next(v for v in directives["Environment"] if v.startswith(SANDBOX_USERNS_ENV))
    kept = Path(told.split("=", 1)[1].replace("/run/sbtc-ops-sandbox/", f"{run_dir}/"))
    try:
        run(directives["ExecStartPre"][0])
        assert kept.is_file()
        yield {SANDBOX_USERNS_ENV: str(kept)}
        run(directives["ExecStopPost"][0])
        assert not os.path.lexists(kept)
    finally:
        if os.path.ismount(kept):
            subprocess.run(["umount", str(kept)], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class Deployment:
    """What the unit gives its user: state, backups, identity and config it owns alone."""

    base: Path
    uid: int
    gid: int
    state: Path = field(init=False)
    repo: Path = field(init=False)
    identity: Path = field(init=False)
    signer_config: Path = field(init=False)
    tmp: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state, self.repo = self.base / "state", self.base / "backups"
        self.identity, self.signer_config = self.base / "identity.txt", self.base / "signer.toml"
        self.tmp = self.base / "tmp"  # the unit's PrivateTmp

    @property
    def secrets(self) -> list[Path]:
        return [self.identity, self.signer_config, self.state]


def _deploy(area: Area, uid: int, gid: int) -> Deployment:
    base = Path(tempfile.mkdtemp(prefix="sbtcsb-", dir="/tmp"))
    base.chmod(0o755)
    dep = Deployment(base, uid, gid)
    shutil.copytree(area.repo, dep.repo)
    dep.state.mkdir()
    # The service knows the schema its backups recorded (the generated one is no release's).
    copy_schema_references(area.root / "state", dep.state)
    dep.tmp.mkdir()
    dep.identity.write_text(area.identity + "\n")
    dep.signer_config.write_text(SIGNER_CONFIG)
    for path in (dep.state, dep.repo, dep.tmp):
        path.chmod(0o700)
    for path in (dep.identity, dep.signer_config):
        path.chmod(0o600)
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(base)], check=True)
    return dep


@dataclass
class Sample:
    pid: int
    name: str
    uid: int
    visible: list[str]


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _sample(ancestor: int, secrets: list[Path]) -> list[Sample]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            name = (entry / "exe").readlink().name
            if (entry / "cmdline").read_bytes().split(b"\0")[1:2] == [b"--version"]:
                continue  # find_binaries' version probe of a trusted binary: no archive
            if name not in READERS or not _descends_from(pid, ancestor):
                continue
            status = (entry / "status").read_text()
            uid = int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])
            visible = [str(p) for p in secrets if os.path.lexists(f"/proc/{pid}/root{p}")]
        except (OSError, StopIteration, ValueError):
            continue
        found.append(Sample(pid, name, uid, visible))
    return found


def _run_verify(
    dep: Deployment,
    area: Area,
    target: str,
    user: str | None,
    *,
    nnp: bool = False,
    extra_env: dict[str, str] | None = None,
) -> tuple[CliResult, list[Sample]]:
    """`sbtc-ops verify --json` as `user` (None: root), with /proc sampled while it runs;
    `nnp`: with no-new-privileges, as the systemd unit's NoNewPrivileges=true gives it."""
    program = [sbtc_ops_executable()] if user is None else _sbtc_ops_as_service()
    argv = [*program, "verify", target, "--repo", str(dep.repo)]
    argv += ["--identity", str(dep.identity), "--stacks-url", area.stacks_url, "--json"]
    if user is not None:
        ids = [f"--reuid={user}", f"--regid={user}", "--init-groups"]
        argv = ["setpriv", *ids, *(["--no-new-privs"] if nnp else []), "--", *argv]
    env = clean_env(
        dep.state,
        {"TMPDIR": str(dep.tmp), "HOME": str(dep.state), **FAST_CHAIN_ENV, **(extra_env or {})},
    )
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The units' UMask=0077: what the sandbox user must read is not left to the umask.
        preexec_fn=(lambda: os.umask(0o077)) if user is not None else None,
    )
    samples: list[Sample] = []
    out, err = communicate_sampling(
        proc, lambda: samples.extend(_sample(proc.pid, dep.secrets)), timeout=300, every_s=0.01
    )
    assert "Traceback" not in err, err
    return CliResult(proc.returncode, out, err), samples


def _assert_contained(
    result: CliResult, samples: list[Sample], service_uid: int, separate: bool
) -> dict:
    doc = json.loads(result.stdout)
    assert result.code == 0 and doc["verdict"] == "match", result.stderr[-2000:]
    assert {s.name for s in samples} >= {"postgres"}, "no archive reader was sampled"
    for sample in samples:
        assert not sample.visible, f"{sample.name} (pid {sample.pid}) sees {sample.visible}"
        if separate:
            assert sample.uid != service_uid, f"{sample.name} runs as the service's uid"
    return doc


def test_root_cli_drill_runs_as_another_uid_in_a_view_without_secrets(area: Area) -> None:
    dep = _deploy(area, 0, 0)
    try:
        result, samples = _run_verify(dep, area, area.backup_id, None)
        doc = _assert_contained(result, samples, 0, separate=True)
        assert doc["sandbox"]["mode"] == "bwrap-root" and doc["sandbox"]["full"] is True
        assert "warning: the restore drill's sandbox" not in result.stderr
        assert_no_postgres_left(dep.tmp)
    finally:
        shutil.rmtree(dep.base, ignore_errors=True)


@pytest.mark.parametrize(
    ("user", "nnp", "prepared", "mode", "separate"),
    [
        (WITH_SUBUID, False, False, "bwrap-subuid", True),  # a CLI user with a subuid range
        (WITHOUT_SUBUID, False, False, "bwrap-userns", False),
        # The systemd unit without its prepared namespace: NoNewPrivileges leaves newuidmap
        # powerless, subuid range or not.
        (WITH_SUBUID, True, False, "bwrap-userns", False),
        # The shipped unit: root's ExecStartPre=+ prepared the sandbox user's namespace.
        (WITHOUT_SUBUID, True, True, "bwrap-sandbox-user", True),
    ],
)
def test_service_user_drill_is_sandboxed_as_far_as_the_host_allows(
    area: Area,
    service_users: dict[str, pwd.struct_passwd],
    user: str,
    nnp: bool,
    prepared: bool,
    mode: str,
    separate: bool,
) -> None:
    entry = service_users[user]
    dep = _deploy(area, entry.pw_uid, entry.pw_gid)
    try:
        with contextlib.ExitStack() as stack:
            env = stack.enter_context(sandbox_userns(user)) if prepared else {}
            result, samples = _run_verify(dep, area, area.backup_id, user, nnp=nnp, extra_env=env)
        doc = _assert_contained(result, samples, entry.pw_uid, separate)
        layers = doc["sandbox"]
        assert layers["mode"] == mode and layers["mount_view"] and layers["no_network"]
        assert layers["separate_uid"] is separate and layers["full"] is separate
        if prepared:
            assert {s.uid for s in samples} == {service_users[SANDBOX_USER].pw_uid}
            assert "warning: the restore drill's sandbox" not in result.stderr
        elif separate:
            assert {s.uid for s in samples} == {SUBUID_START}
        else:  # said on every run, and in --json
            assert (
                "warning: the restore drill's sandbox (bwrap-userns) lacks a uid of its own"
                in result.stderr
            )
            assert layers["missing"] == ["a uid of its own"]
        assert not [p for p in dep.tmp.iterdir()], "the run left files behind"
        # The audit reads the layers the last verify recorded.
        settings = load_settings(overrides={"state_dir": str(dep.state)}, environ={})
        findings = {f.id: f for f in audit_host(settings, areas=["backups"]).findings}
        assert findings["BAK-006"].status == (Status.PASS if separate else Status.WARN)
        if not separate:
            assert "a uid of its own" in findings["BAK-006"].detail
    finally:
        shutil.rmtree(dep.base, ignore_errors=True)


def test_subordinate_uid_drill_of_a_gzipped_plain_dump(
    area: Area, service_users: dict[str, pwd.struct_passwd]
) -> None:
    """A plain dump is read by sbtc-ops itself too (psql gets it on stdin, roles are listed
    from it): handed over to a subordinate uid, it must stay readable by us."""
    entry = service_users[WITH_SUBUID]
    dep = _deploy(area, entry.pw_uid, entry.pw_gid)
    try:
        dump = gzip_file(area.plain_dump, dep.base / "signer.sql.gz")
        os.chown(dump, entry.pw_uid, entry.pw_gid)
        result, samples = _run_verify(dep, area, str(dump), WITH_SUBUID)
        doc = _assert_contained(result, samples, entry.pw_uid, separate=True)
        assert doc["sandbox"]["mode"] == "bwrap-subuid"
        # (Every sampled reader was checked above; gzip may end before a sample sees it, the
        # server cannot: it lives for the whole drill.)
        assert "postgres" in {s.name for s in samples}
        assert {s.uid for s in samples} == {SUBUID_START}
    finally:
        shutil.rmtree(dep.base, ignore_errors=True)


# -- Sandbox itself, in each mode: a probe program ------------------------------------------

PROBE = """
import json, os, socket, sys
port, paths = int(sys.argv[1]), sys.argv[2:]
try:
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    net = "connected"
except OSError as exc:
    net = type(exc).__name__
print(json.dumps({"uid": os.getuid(), "visible": [p for p in paths if os.path.lexists(p)],
                  "net": net, "proc": os.path.exists("/proc/1"), "etc": sorted(os.listdir("/etc"))}))
"""

RUNNER = """
import json, sys
from sbtc_ops.pg.runas import SANDBOX_USERNS_ENV, resolve_run_as
from sbtc_ops.pg.sandbox import Sandbox
sandbox = Sandbox(resolve_run_as())
done = sandbox.run(["/usr/bin/python3", "-c", sys.argv[1], *sys.argv[2:]], timeout_s=60)
print(json.dumps({"mode": str(sandbox.mode), "rc": done.returncode, "out": done.stdout,
                  "err": done.stderr}))
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.mark.parametrize(
    ("user", "mode"),
    [
        (None, "bwrap-root"),
        (WITH_SUBUID, "bwrap-subuid"),
        (WITHOUT_SUBUID, "bwrap-userns"),
        (WITHOUT_SUBUID, "bwrap-sandbox-user"),
    ],
)
def test_sandbox_probe_sees_no_secret_no_network_no_process(
    service_users: dict[str, pwd.struct_passwd], listener: int, user: str | None, mode: str
) -> None:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("the probe needs the system's python3")
    entry = service_users[user] if user else pwd.getpwuid(0)
    secrets = Path(tempfile.mkdtemp(prefix="sbtcsb-secrets-", dir="/tmp"))
    try:
        secrets.chmod(0o755)  # readable by anyone: only the view may hide them
        for name in ("identity.txt", "signer-config.toml"):
            (secrets / name).write_text("secret\n")
            (secrets / name).chmod(0o644)
        argv = [sys.executable, "-c", RUNNER, PROBE, str(listener), str(secrets / "identity.txt")]
        argv += [str(secrets / "signer-config.toml"), "/etc/sbtc-ops", "/var/lib/sbtc-ops", "/root"]
        if user is not None:
            ids = [f"--reuid={user}", f"--regid={user}", "--init-groups"]
            if mode == "bwrap-sandbox-user":  # as the unit runs it
                ids.append("--no-new-privs")
            argv = ["setpriv", *ids, "--", *argv]
        with contextlib.ExitStack() as stack:
            env = dict(os.environ)
            if mode == "bwrap-sandbox-user":
                env |= stack.enter_context(sandbox_userns(WITHOUT_SUBUID))
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, cwd="/", timeout=120, env=env
            )
        assert done.returncode == 0, done.stderr
        outer = json.loads(done.stdout)
        assert outer["mode"] == mode and outer["rc"] == 0, outer
        probe = json.loads(outer["out"])
        assert probe["visible"] == []
        assert probe["net"] != "connected"
        assert probe["proc"] is False
        assert probe["etc"] == ["group", "passwd"]
        if mode != "bwrap-userns":
            assert probe["uid"] != entry.pw_uid
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


def test_a_tcp_test_server_keeps_the_network(listener: int) -> None:
    sandbox = Sandbox(resolve_run_as(), network=True)
    if sandbox.mode == Mode.PROCESS_GROUP:
        pytest.skip("no sandbox here")
    done = sandbox.run(["/usr/bin/python3", "-c", PROBE, str(listener)], timeout_s=60)
    assert json.loads(done.stdout)["net"] == "connected", done.stderr


# -- kill -9 ----------------------------------------------------------------------------------


def _wait_for_reader(ancestor: int, name: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(s.name == name for s in _sample(ancestor, [])):
            return
        time.sleep(0.02)
    raise AssertionError(f"no {name} started")


def _as_cluster_user(*argv: str) -> subprocess.CompletedProcess[str]:
    run_as = resolve_run_as()
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={run_as.uid}",
            f"--regid={run_as.gid}",
            "--clear-groups",
            "--",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_kill_9_mid_restore_leaves_nothing_readable_and_the_next_run_reaps(area: Area) -> None:
    dep = _deploy(area, 0, 0)
    # A plain dump whose restore waits: the drill is mid-restore for as long as we need.
    slow = dep.base / "slow.sql"
    slow.write_text(area.plain_dump.read_text() + "\nSELECT pg_sleep(120);\n")
    env = clean_env(dep.state, {"TMPDIR": str(dep.tmp), **FAST_CHAIN_ENV})
    argv = [sbtc_ops_executable(), "verify", str(slow), "--stacks-url", area.stacks_url, "--json"]
    proc = subprocess.Popen(
        argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_reader(proc.pid, "psql")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert_no_postgres_left(dep.tmp, grace_s=10)  # the sandbox died with sbtc-ops
        clusters = list(dep.tmp.glob("sbtc-pg-*"))
        stagings = list(dep.tmp.glob("sbtc-ops-verify-*"))
        assert clusters and stagings, "kill -9 left nothing to look at"
        data = clusters[0] / "data"
        staged = [p for p in stagings[0].rglob("*") if p.is_file() and p.name != "owner.pid"]
        assert (data / "PG_VERSION").exists() and staged
        for base in (*clusters, *stagings):
            assert base.stat().st_mode & 0o777 == 0o700
        for path in (data / "PG_VERSION", *staged):
            denied = _as_cluster_user("cat", str(path))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, path
        assert _as_cluster_user("ls", str(data)).returncode != 0
        # The next run (here, of a clean backup) reaps what the killed one left.
        result, _ = _run_verify(dep, area, area.backup_id, None)
        assert result.code == 0, result.stderr[-2000:]
        assert not [p for p in (*clusters, *stagings) if p.exists()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(dep.base, ignore_errors=True)


def test_root_without_bubblewrap_falls_back_to_the_pid_namespace_and_says_so(
    monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    """The previous container, as on a host without bubblewrap: a PID namespace and another
    uid, but the host's filesystem and network, which the report names."""
    import sbtc_ops.pg.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "bwrap_problem", lambda *_: "bwrap: not installed")
    sandbox = Sandbox(resolve_run_as())
    assert sandbox.mode == Mode.PIDNS and not sandbox.mount_view
    isolation = sandbox.isolation()
    assert isolation.separate_uid and isolation.pid_namespace and not isolation.full
    assert isolation.missing() == [
        "a filesystem view without sbtc-ops' and the signer's files",
        "no network",
    ]
    assert "bwrap: not installed" in isolation.why
    done = sandbox.run(
        ["/usr/bin/python3", "-c", PROBE, str(listener), "/etc/hostname"], timeout_s=60
    )
    probe = json.loads(done.stdout)
    assert probe["uid"] != 0 and probe["net"] == "connected"
