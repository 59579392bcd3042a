"""The shipped timer unit under a real systemd (issue 21: the drill's own uid where sbtc-ops is
deployed).

systemd 252 boots as PID 1 of a container (systemd-nspawn --volatile=yes: the host's own /usr,
read-only; the rest the container's own), with `deploy/systemd/sbtc-ops-job@.service` exactly
as shipped. `systemctl start sbtc-ops-job@backup.service` then takes a real backup of a real
signer database and verifies it (`serve --once backup`), with every directive of the unit in
force: User=sbtc-ops under NoNewPrivileges, UMask=0077, ProtectSystem=strict, PrivateTmp,
RestrictNamespaces, RestrictSUIDSGID, the system-call filter, and root's ExecStartPre=+
preparing the sandbox user's namespace that ExecStopPost=+ releases. What the emulation in
tests/test_sandbox_deployments.py cannot show is shown here: the namespace kept in PID 1's
mount namespace reaches the service's own, and the drill runs in mode `bwrap-sandbox-user`,
every program that reads the archive as the sandbox user's uid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sbtc_ops.pg.cluster import free_tcp_port
from sbtc_ops.state import EventKind, StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import communicate_sampling
from tests.support.pg import SourceServer, new_signer_database
from tests.support.serve import signer_config
from tests.support.verify import private_tmpdir, serve_facts

REPO = Path(__file__).resolve().parent.parent
NSPAWN = shutil.which("systemd-nspawn")
SYSTEMD = Path("/lib/systemd/systemd")
SYSTEM_PYTHON = "/usr/bin/python3"
# The container's sbtc-ops and sbtc-ops-sandbox: uids no other test uses (the Docker lab's
# containers run as 10001/10002 on this kernel, beside this test).
SERVICE_UID, SANDBOX_UID = 47101, 47102
UNIT = "sbtc-ops-job@backup.service"
READERS = {"postgres", "pg_restore", "psql", "pg_amcheck", "initdb"}

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="boots a container (root)"),
    pytest.mark.skipif(
        NSPAWN is None or not SYSTEMD.exists(),
        reason="needs systemd and systemd-nspawn (Debian systemd-container)",
    ),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]


@dataclass
class Booted:
    """A container whose PID 1 is systemd, and the host directories bound into it."""

    init_pid: int
    root: Path
    state: Path
    repo: Path
    port: int  # the daemon's HTTP

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in the container's mount namespace (systemctl, journalctl), as root."""
        return subprocess.run(
            ["nsenter", f"--target={self.init_pid}", "--mount", "--pid", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["nsenter", f"--target={self.init_pid}", "--mount", "--pid", "--", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def user_files(root: Path) -> tuple[Path, Path]:
    """The host's passwd and group plus the unit's two users (the container's /etc is the
    host's, read-only: these two files are bound over it)."""
    passwd, group = root / "passwd", root / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text()
        + f"sbtc-ops:x:{SERVICE_UID}:{SERVICE_UID}::/var/lib/sbtc-ops:/usr/sbin/nologin\n"
        + f"sbtc-ops-sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::/nonexistent:/usr/sbin/nologin\n"
    )
    group.write_text(
        Path("/etc/group").read_text()
        + f"sbtc-ops:x:{SERVICE_UID}:\nsbtc-ops-sandbox:x:{SANDBOX_UID}:\n"
    )
    return passwd, group


def system_python() -> str:
    """Debian's python3 at the test venv's version (the venv's own interpreter may live
    under /root, which the unit's ProtectHome=true hides), else skip."""
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{SYSTEM_PYTHON} is missing")
    if done.stdout.strip() != wanted:
        pytest.skip(f"{SYSTEM_PYTHON} is {done.stdout.strip()}, the test venv {wanted}")
    return wanted


def installed_with_system_python(root: Path) -> list[str]:
    """sbtc-ops for the container as a system install would be: /usr/local/bin/sbtc-ops run
    by Debian's python3, whose /usr/local site directory holds a .pth naming the test venv's
    packages and this checkout's sources (a .pth, not PYTHONPATH: the decryption child runs
    isolated, -I). The container's /usr is the host's, read-only: both directories are
    bound over the host's own (made first if missing)."""
    version = system_python()
    site_dir = Path(f"/usr/local/lib/python{version}/dist-packages")
    site_dir.mkdir(parents=True, exist_ok=True)
    packages = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    # At paths of their own: the checkout may lie under /tmp or /var/tmp, which the unit's
    # PrivateTmp= replaces.
    code = Path("/opt/sbtc-ops-under-test")
    site = root / "site"
    site.mkdir()
    (site / "sbtc-ops.pth").write_text(f"{code / 'src'}\n{code / 'site-packages'}\n")
    local_bin = root / "local-bin"
    local_bin.mkdir()
    launcher = local_bin / "sbtc-ops"
    launcher.write_text(
        f"#!/bin/sh\nexec {SYSTEM_PYTHON} -c "
        "'import sys; from sbtc_ops.cli import main; sys.exit(main())' \"$@\"\n"
    )
    launcher.chmod(0o755)
    return [
        f"--bind-ro={site}:{site_dir}",
        f"--bind-ro={local_bin}:/usr/local/bin",
        f"--bind-ro={REPO / 'src'}:{code / 'src'}",
        f"--bind-ro={packages.resolve()}:{code / 'site-packages'}",
    ]


def owned_dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def container_init(nspawn: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """The container's PID 1 as the host sees it: nspawn's child running systemd."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{nspawn.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if Path(f"/proc/{child}/exe").resolve() == SYSTEMD.resolve():
                        return int(child)
        if nspawn.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"systemd did not start in the container (nspawn: {nspawn.poll()})")


def wait_booted(booted: Booted, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = booted.run("systemctl", "is-system-running").stdout.strip()
        if state in ("running", "degraded"):  # (a unit of the host's may fail in here)
            return
        time.sleep(0.2)
    raise AssertionError(f"the container's systemd did not finish booting: {state!r}")


@pytest.fixture
def booted(tmp_path: Path, source_server: SourceServer) -> Iterator[tuple[Booted, str]]:
    url, facts = new_signer_database(source_server, target_mb=1.0, seed=81)
    root = private_tmpdir("snu-")
    root.chmod(0o755)
    with FakeStacksNode(deployer=facts.deployer) as node:
        serve_facts(node, facts)
        repo = owned_dir(root / "backups", SERVICE_UID)
        state = owned_dir(root / "state", SERVICE_UID)
        textfile = owned_dir(root / "textfile", SERVICE_UID, 0o755)
        etc = root / "etc-sbtc-ops"
        etc.mkdir()
        port = free_tcp_port()  # the daemon's (the container shares the host's network)
        config = signer_config(
            etc, url, node.url, backup_cron="17 3 * * *", bind=f"127.0.0.1:{port}"
        )
        text = config.read_text().replace(str(etc / "repo"), "/var/backups/sbtc-ops")
        config.write_text(text)
        os.chown(config, 0, SERVICE_UID)
        config.chmod(0o640)
        units = root / "units"
        units.mkdir()
        for shipped in ("sbtc-ops-job@.service", "sbtc-ops.service"):
            shutil.copy(REPO / "deploy/systemd" / shipped, units)
        (units / "sbtc-test.target").write_text("[Unit]\nDescription=test\n")
        passwd, group = user_files(root)
        binds = [
            f"--bind-ro={passwd}:/etc/passwd",
            f"--bind-ro={group}:/etc/group",
            f"--bind-ro={units}:/run/systemd/system",
            f"--bind-ro={etc}:/etc/sbtc-ops",
            *installed_with_system_python(root),
            f"--bind={repo}:/var/backups/sbtc-ops",
            f"--bind={state}:/var/lib/sbtc-ops",
            f"--bind={textfile}:/var/lib/prometheus/node-exporter",
        ]
        assert NSPAWN is not None
        machine = f"sbtc-unit-{os.getpid()}"
        nspawn = subprocess.Popen(
            [NSPAWN, "--directory=/", "--volatile=yes", "--register=no", "--keep-unit",
             "--console=passive", f"--machine={machine}", *binds,
             "--boot", "--", "--unit=sbtc-test.target", "systemd.firstboot=off"],
            stdin=subprocess.DEVNULL,
            stdout=(root / "nspawn.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            try:
                init = container_init(nspawn)
                container = Booted(init, root, state, repo, port)
                wait_booted(container)
            except AssertionError as exc:
                log = (root / "nspawn.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{exc}\n{log}") from None
            yield container, facts.newest_verified_key.hex()
        finally:
            nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container to power off
            try:
                nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
            leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and owned_by(p)]
            with contextlib.suppress(OSError):  # nspawn's own, empty once it is done
                Path(f"/run/systemd/nspawn/propagate/{machine}").rmdir()
            shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes of the container's users outlived it: {leftovers}"


def owned_by(proc: Path, uids: tuple[int, ...] = (SERVICE_UID, SANDBOX_UID)) -> bool:
    try:
        return proc.stat().st_uid in uids
    except OSError:
        return False


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        while pid > 1:
            pid = parent_of(pid)
            if pid == ancestor:
                return True
    return False


def reader_uids(init_pid: int) -> dict[str, set[int]]:
    """Kernel uids of the programs in the container that read an archive, by name, right
    now (the host's own PostgreSQL, the backup's source, is not the container's)."""
    found: dict[str, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            if (proc / "cmdline").read_bytes().split(b"\0")[1:2] == [b"--version"]:
                continue  # find_binaries' version probe of a trusted binary: no archive
            if name in READERS and descends_from(int(proc.name), init_pid):
                found.setdefault(name, set()).add(proc.stat().st_uid)
        except OSError:
            continue
    return found


def test_the_shipped_job_unit_backs_up_and_drills_as_the_sandbox_user(
    booted: tuple[Booted, str],
) -> None:
    container, key = booted
    seen: dict[str, set[int]] = {}

    def sample() -> None:
        for name, uids in reader_uids(container.init_pid).items():
            seen.setdefault(name, set()).update(uids)

    # Twice: the first drill on the host runs initdb and keeps its cluster template in the
    # state directory (2770), the second copies it; neither may fall back or warn.
    for _run in range(2):
        start = container.popen("systemctl", "start", UNIT)
        out, err = communicate_sampling(start, sample, timeout=300, every_s=0.02)
        journal = container.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout
        assert start.returncode == 0, f"{out}{err}\n{journal}"
        shown = container.run("systemctl", "show", "-P", "Result", UNIT).stdout.strip()
        assert shown == "success", journal
    assert journal.count(": match") == 2, journal

    # The job's own report: the backup, then its verify, `match`, with no sandbox warning.
    assert "verify:" in journal and ": match" in journal, journal
    assert "warning" not in journal.lower(), journal
    with StateStore.open(container.state) as store:
        verify = store.last_event(EventKind.VERIFY)
    assert verify is not None
    assert verify.data["verdict"] == "match", verify.data
    sandbox = verify.data["sandbox"]
    assert sandbox["mode"] == "bwrap-sandbox-user", sandbox
    assert sandbox["full"] is True and sandbox["separate_uid"] is True, sandbox
    assert key in json.dumps(verify.data)  # the key the chain serves was compared

    # Every program that read the archive ran as the sandbox user, never as the service.
    # (The server lives for the whole drill; a client of a 1 MB restore may come and go
    # between two samples on a busy host.)
    assert "postgres" in seen, seen
    for name, uids in seen.items():
        assert uids == {SANDBOX_UID}, (name, uids)

    # ExecStopPost=+ released the kept namespace: nothing of it is mounted any more.
    mounts = Path(f"/proc/{container.init_pid}/mountinfo").read_text()
    assert "sbtc-ops-sandbox" not in mounts, mounts
    assert any(container.repo.iterdir()), "no backup was written"


def test_a_unit_from_before_the_state_subdirectories_still_drills(
    booted: tuple[Booted, str],
) -> None:
    """An operator's older copy of the unit lists only the state directory: the service
    makes locks/ and the rest itself, where RestrictSUIDSGID= refuses the chmod that keeps
    the shared setgid mode. The job still backs up and verifies, and says what it kept."""
    container, _key = booted
    drop_in = container.root / "units" / "sbtc-ops-job@.service.d"
    drop_in.mkdir()
    (drop_in / "older.conf").write_text("[Service]\nStateDirectory=\nStateDirectory=sbtc-ops\n")
    assert container.run("systemctl", "daemon-reload").returncode == 0
    started = container.run("systemctl", "start", UNIT, timeout=300)
    journal = container.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout
    assert started.returncode == 0, f"{started.stderr}\n{journal}"
    assert ": match" in journal, journal
    assert re.search(r"/var/lib/sbtc-ops/locks keeps mode \d+, not 2770", journal), journal
    assert "Traceback" not in journal


def test_the_shipped_daemon_unit_serves_with_the_sandbox_users_namespace(
    booted: tuple[Booted, str],
) -> None:
    """sbtc-ops.service (the daemon) starts, answers /readyz, has the sandbox user's
    namespace in its own mount namespace, and releases it when stopped."""
    container, _key = booted
    daemon = "sbtc-ops.service"
    kept = "/run/sbtc-ops-sandbox/sbtc-ops.userns"
    started = container.run("systemctl", "start", daemon)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{container.port}/readyz", timeout=2)
            if answer.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        journal = container.run("journalctl", "--no-pager", "-o", "cat", "-u", daemon).stdout
        assert time.monotonic() < deadline, f"/readyz never answered 200:\n{journal}"
        time.sleep(0.2)
    main = container.run("systemctl", "show", "-P", "MainPID", daemon).stdout.strip()
    mounts = container.run("cat", f"/proc/{main}/mountinfo").stdout
    assert any(kept in line and " nsfs " in line for line in mounts.splitlines()), mounts
    assert container.run("systemctl", "stop", daemon).returncode == 0
    assert container.run("systemctl", "show", "-P", "Result", daemon).stdout.strip() == "success"
    assert kept not in Path(f"/proc/{container.init_pid}/mountinfo").read_text()
