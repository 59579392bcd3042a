"""One state per host (issue 24, item 3): the service user and root use the same state
directory, so history and locks are shared.

The service side runs as a real other user (`nobody`, standing in for `sbtc-ops`: creating
an `sbtc-ops` user would change which user other tests' throwaway clusters run as) with
`$STATE_DIRECTORY` set as systemd sets it; the administrator's side runs as root with no
state setting at all. Both are real `sbtc-ops` processes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sbtc_ops.state import StateStore
from sbtc_ops.statedir import SHARED_STATE_DIR, default_state_dir
from tests.support.cli import CliResult, clean_env, sbtc_ops_executable

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

SERVICE_USER = "nobody"


# -- the default, as a pure function ---------------------------------------------------------


def test_state_directory_from_systemd_wins_over_the_defaults(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b", "XDG_STATE_HOME": "/x"}
    assert default_state_dir(env, euid=0) == tmp_path / "a"
    assert default_state_dir(env, euid=1000) == tmp_path / "a"


def test_root_defaults_to_the_shared_directory() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/x"}, euid=0) == SHARED_STATE_DIR


def test_a_user_who_cannot_write_the_shared_directory_keeps_a_private_one() -> None:
    if os.access(SHARED_STATE_DIR, os.W_OK) and os.geteuid() != 0:
        pytest.skip(f"this user may write {SHARED_STATE_DIR}")
    if os.geteuid() == 0 and SHARED_STATE_DIR.is_dir():
        pytest.skip(f"{SHARED_STATE_DIR} exists; as root os.access says writable")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}, euid=1000) == Path("/x/sbtc-ops")


# -- two users, one state --------------------------------------------------------------------


@pytest.fixture
def shared_state() -> Iterator[tuple[Path, pwd.struct_passwd]]:
    """A state directory as systemd makes it for the unit: owned by the service user,
    mode 2770 (StateDirectoryMode=2770), under a directory that user can traverse."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run commands as the service user and as root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pytest.skip(f"no {SERVICE_USER!r} user on this host")
    base = Path(tempfile.mkdtemp(prefix="sbtc-ops-statedir-"))
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir()
        os.chown(state, user.pw_uid, user.pw_gid)
        state.chmod(0o2770)
        repo = base / "repo"
        repo.mkdir(mode=0o700)
        os.chown(repo, user.pw_uid, user.pw_gid)
        yield state, user
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(user: pwd.struct_passwd) -> list[str]:
    """The argv prefix that runs a program as `user`, with no supplementary group. It keeps
    one capability, CAP_DAC_READ_SEARCH: the test interpreter may live where only root can
    read (a pyenv under /root, 0700), and a security tool's test must not loosen that.
    Writing still needs the user's own permissions, so what is shared for writing (state.db,
    its WAL, the lock files) is tested for real."""
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def run(user: pwd.struct_passwd, state: Path, *args: str, timeout: float = 120) -> CliResult:
    """`sbtc-ops ARGS` as the service user, the state given only by $STATE_DIRECTORY (what
    systemd's StateDirectory= sets for the unit)."""
    env = clean_env(state)
    del env["SBTC_OPS_STATE_DIR"]
    env["HOME"] = str(state.parent)
    env["STATE_DIRECTORY"] = str(state)
    proc = subprocess.run(
        [*as_user(user), sbtc_ops_executable(), *args],
        cwd=state.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_service_user_and_root_share_history_and_locks(
    shared_state: tuple[Path, pwd.struct_passwd],
    small_db: tuple[str, GeneratedDb],
) -> None:
    state, user = shared_state
    repo = state.parent / "repo"
    url = small_db[0]

    # The daemon's side: a DKG backup as the service user.
    service = run(user, state, "backup", "--db", url, "--dkg-only", "--to", str(repo), "--json")
    assert service.code == 0, service.stderr
    service_id = service.json()["backup"]["id"]

    # The administrator's side, as root, on the same state (through $SBTC_OPS_STATE_DIR
    # only because the test cannot use /var/lib/sbtc-ops itself).
    admin = run_root(state, "backup", "--db", url, "--dkg-only", "--to", str(repo), "--json")
    assert admin.code == 0, admin.stderr
    admin_id = admin.json()["backup"]["id"]

    # One history: both runs, seen by either user.
    with StateStore.open(state) as store:
        recorded = {event.subject for event in store.events("backup", limit=10)}
    assert {service_id, admin_id} <= recorded
    listed = run(user, state, "backups", "--repo", str(repo), "--json")
    assert listed.code == 0, listed.stderr
    assert {row["id"] for row in listed.json()["backups"]} >= {service_id, admin_id}

    # Everything root created in the state directory belongs to the service user and is
    # shared with its group only.
    for path in [state, *state.rglob("*")]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid), path
        assert stat.S_IMODE(info.st_mode) & 0o007 == 0, f"{path} is open to others"

    # One lock: root holding the backup lock stops the service's backup, and the reverse.
    for holder_is_root in (True, False):
        with held_backup_lock(state, None if holder_is_root else user):
            blocked = (
                run(user, state, "backup", "--db", url, "--dkg-only", "--to", str(repo), "--json")
                if holder_is_root
                else run_root(state, "backup", "--db", url, "--dkg-only", "--to", str(repo))
            )
        assert blocked.code == 2, blocked.stderr
        assert "already running" in blocked.stderr


def run_root(state: Path, *args: str) -> CliResult:
    """As root, with the state given by the documented variable (the test cannot use
    /var/lib/sbtc-ops, root's default, itself)."""
    env = clean_env(state)
    proc = subprocess.run(
        [sbtc_ops_executable(), *args],
        cwd=state.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class held_backup_lock:
    """The backup lock held by another process running as `user` (None: root), the way a
    running backup holds it."""

    def __init__(self, state: Path, user: pwd.struct_passwd | None) -> None:
        self.state, self.user = state, user

    def __enter__(self) -> None:
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from sbtc_ops.backup.lock import exclusive_lock\n"
            "with exclusive_lock(Path(sys.argv[1]), 'backup'):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n"
        )
        prefix = as_user(self.user) if self.user else []
        python = str(Path(sbtc_ops_executable()).parent / "python")
        self.proc = subprocess.Popen(
            [*prefix, python, "-c", code, str(self.state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
