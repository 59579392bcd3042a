"""`sbtc-ops sandbox-userns` and the checks sbtc-ops makes of the namespace it is given
(pg/sandboxuser.py, pg/runas.prepared_sandbox_user). The drills that run in it are in
tests/test_sandbox_deployments.py (the unit) and tests/test_docker_deploy_compose.py."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops.errors import ConfigError, DependencyError
from sbtc_ops.pg import sandboxuser
from sbtc_ops.pg.runas import SANDBOX_USERNS_ENV, RunAs, read_namespace_ids
from tests.support.cli import clean_env, run_cli, sbtc_ops_executable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="maps ids and mounts as root")

SERVICE = sandboxuser.Ids(65534, 65534, "nobody")  # any unprivileged uid will do
SANDBOX = sandboxuser.Ids(61234, 61234, "61234:61234")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sbtc-nsuser-"))
    path.chmod(0o755)  # the namespace file may be opened by anyone: only its owner may join
    try:
        yield path
    finally:
        target = path / "userns"
        if os.path.ismount(target):
            subprocess.run(["umount", str(target)], check=False)
        subprocess.run(["rm", "-rf", str(path)], check=False)


def as_service(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ids = [f"--reuid={SERVICE.uid}", f"--regid={SERVICE.gid}", "--clear-groups", "--no-new-privs"]
    return subprocess.run(
        ["setpriv", *ids, "--", *argv],
        capture_output=True, text=True, check=False, timeout=60, cwd="/", env=env,
    )  # fmt: skip


def test_keep_at_maps_exactly_the_service_and_the_sandbox_user(run_dir: Path) -> None:
    kept = run_dir / "userns"
    sandboxuser.keep_at(SERVICE, SANDBOX, kept)
    assert os.path.ismount(kept)
    # The service joins it without any privilege (no-new-privs, as the unit), as its uid 0,
    # and may drop to uid 1, the sandbox user's kernel uid.
    joined = as_service("nsenter", f"--user={kept}", "--", "cat", "/proc/self/uid_map")
    assert joined.returncode == 0, joined.stderr
    assert [line.split() for line in joined.stdout.splitlines()] == [
        ["0", str(SERVICE.uid), "1"],
        ["1", str(SANDBOX.uid), "1"],
    ]
    dropped = as_service(
        "nsenter", f"--user={kept}", "--", "setpriv", "--reuid=1", "--regid=1",
        "--clear-groups", "--", "sleep", "5",
    )  # fmt: skip
    assert dropped.returncode == 0, dropped.stderr
    sandboxuser.release(kept)
    assert not os.path.lexists(kept)
    sandboxuser.release(kept)  # twice is fine: ExecStopPost after a failed start


@pytest.mark.parametrize("unsafe", ["others may write", "a symlink", "the service's"])
def test_keep_at_refuses_a_directory_another_user_could_change(run_dir: Path, unsafe: str) -> None:
    """mount(2) follows a symlink: only in root's own directory may the bind mount be made."""
    directory = run_dir / "keep"
    if unsafe == "a symlink":
        (run_dir / "elsewhere").mkdir()
        directory.symlink_to(run_dir / "elsewhere")
    else:
        directory.mkdir(mode=0o755)
        if unsafe == "others may write":
            directory.chmod(0o777)
        else:
            os.chown(directory, SERVICE.uid, SERVICE.gid)
    with pytest.raises(ConfigError, match="no one else may write"):
        sandboxuser.keep_at(SERVICE, SANDBOX, directory / "userns")
    assert not any(os.path.ismount(p) for p in run_dir.rglob("*"))


def test_another_user_cannot_join_it(run_dir: Path) -> None:
    kept = run_dir / "userns"
    sandboxuser.keep_at(SERVICE, SANDBOX, kept)
    stranger = subprocess.run(
        ["setpriv", "--reuid=61235", "--regid=61235", "--clear-groups", "--",
         "nsenter", f"--user={kept}", "--", "true"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert stranger.returncode != 0 and "reassociate" in stranger.stderr, stranger.stderr
    # Not the sandbox user either: it may not climb back to the service.
    sandbox = subprocess.run(
        ["setpriv", f"--reuid={SANDBOX.uid}", f"--regid={SANDBOX.gid}", "--clear-groups", "--",
         "nsenter", f"--user={kept}", "--", "true"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert sandbox.returncode != 0 and "reassociate" in sandbox.stderr, sandbox.stderr


def test_the_holder_of_a_failed_or_finished_start_is_gone(run_dir: Path) -> None:
    holder = sandboxuser.start_holder(SERVICE, SANDBOX)
    assert Path(f"/proc/{holder.pid}").exists()
    holder.release()
    assert not Path(f"/proc/{holder.pid}").exists()
    sandboxuser.keep_at(SERVICE, SANDBOX, run_dir / "userns")
    leftovers = subprocess.run(
        ["pgrep", "-u", str(SERVICE.uid), "-f", "sleep infinity"], capture_output=True, check=False
    )
    assert leftovers.returncode == 1, leftovers.stdout


def test_a_root_with_only_setuid_and_setgid_prepares_it(run_dir: Path) -> None:
    """The compose service's entrypoint: root without DAC override, kill or ptrace."""
    link = run_dir / "userns"
    script = 'nsenter --user="$SBTC_OPS_SANDBOX_USERNS" -- cat /proc/self/uid_map'
    done = subprocess.run(
        ["setpriv", "--bounding-set=-all,+setuid,+setgid", "--inh-caps=-all", "--no-new-privs",
         "--", sbtc_ops_executable(), "sandbox-userns", "--service-user", "65534",
         "--sandbox-user", "61234:61234", "--exec", "--", "/bin/sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=60, cwd=run_dir,
        env={**os.environ, SANDBOX_USERNS_ENV: str(link)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["0", "65534", "1"],
        ["1", "61234", "1"],
    ]


def wait_for_namespace(pid: int) -> None:
    ours = Path("/proc/self/ns/user").readlink()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/ns/user").readlink() == ours:
        assert time.monotonic() < deadline, "unshare did not happen"
        time.sleep(0.01)


def _namespace_with_map(uid_lines: str, gid_lines: str) -> subprocess.Popen[bytes]:
    """A namespace owned by the service with the maps given (what only root can write)."""
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={SERVICE.uid}", f"--regid={SERVICE.gid}", "--clear-groups", "--",
         "unshare", "--user", "--", "sleep", "60"],
    )  # fmt: skip
    wait_for_namespace(holder.pid)
    for name, text in (("uid_map", uid_lines), ("gid_map", gid_lines)):
        fd = os.open(f"/proc/{holder.pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return holder


@pytest.mark.parametrize(
    ("uid_map", "gid_map", "why"),
    [
        ("0 65534 1\n1 0 1\n", "0 65534 1\n1 61234 1\n", "root's or ours"),  # 1 → root
        ("0 65534 1\n", "0 65534 1\n", "exactly two ids"),  # no sandbox user
        ("0 65534 1\n1 61234 1\n2 61240 1\n", "0 65534 1\n1 61234 1\n", "exactly two ids"),
        ("0 65534 1\n1 61234 2\n", "0 65534 1\n1 61234 1\n", "unexpected id map line"),
        ("0 61234 1\n1 65534 1\n", "0 61234 1\n1 65534 1\n", "is not ours"),
    ],
)
def test_a_namespace_that_maps_anything_else_is_refused(
    uid_map: str, gid_map: str, why: str
) -> None:
    holder = _namespace_with_map(uid_map, gid_map)
    try:
        service = RunAs("service", SERVICE.uid, SERVICE.gid, (), True)
        with pytest.raises(DependencyError, match=why):
            read_namespace_ids(f"/proc/{holder.pid}/ns/user", service)
    finally:
        holder.kill()
        holder.wait()


def test_an_unusable_namespace_falls_back_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_namespace = tmp_path / "userns"
    not_a_namespace.write_text("")
    monkeypatch.setenv(SANDBOX_USERNS_ENV, str(not_a_namespace))
    from sbtc_ops.pg.runas import prepared_sandbox_user

    found, why = prepared_sandbox_user(RunAs("me", 0, 0, (), True))
    assert found is None
    assert str(not_a_namespace) in why and "unusable" in why
    with pytest.raises(DependencyError, match="cannot enter it"):
        read_namespace_ids(str(not_a_namespace), RunAs("me", 0, 0, (), True))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --keep-at, --release or --exec"),
        (["--keep-at", "X", "--exec"], "exactly one of"),
        (["--service-user", "65534", "--sandbox-user", "root", "--keep-at", "X"], "is root"),
        (["--service-user", "65534", "--sandbox-user", "65534", "--keep-at", "X"], "other than"),
        (
            ["--service-user", "65534", "--sandbox-user", "no-such-user-here", "--keep-at", "X"],
            "no such user",
        ),
        (["--service-user", "65534", "--sandbox-user", "61234", "--exec"], "needs a command"),
    ],
)
def test_bad_arguments_are_refused_with_exit_2(
    run_dir: Path, args: list[str], message: str
) -> None:
    args = [str(run_dir / "userns") if a == "X" else a for a in args]
    done = run_cli("sandbox-userns", *args, cwd=run_dir)
    assert done.code == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run_dir / "userns").exists()


def test_exec_maps_links_and_runs_the_command_as_the_service(run_dir: Path) -> None:
    link = run_dir / "userns"
    script = (
        'readlink "$SBTC_OPS_SANDBOX_USERNS"; id -u; '
        'nsenter --user="$SBTC_OPS_SANDBOX_USERNS" -- cat /proc/self/uid_map; '
        "grep CapEff /proc/self/status"
    )
    done = run_cli(
        "sandbox-userns", "--service-user", "65534", "--sandbox-user", "61234:61234", "--exec",
        "--", "/bin/sh", "-c", script,
        cwd=run_dir, env={**os.environ, SANDBOX_USERNS_ENV: str(link)},
    )  # fmt: skip
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("/proc/") and lines[0].endswith("/ns/user")
    assert lines[1] == "65534"
    assert lines[2].split() == ["0", "65534", "1"] and lines[3].split() == ["1", "61234", "1"]
    assert lines[4].split() == ["CapEff:", "0000000000000000"]
    assert link.is_symlink() and os.lstat(link).st_uid == 0
    holder = Path(f"/proc/{lines[0].split('/')[2]}")
    deadline = time.monotonic() + 10
    while holder.exists() and b"sleep" in _cmdline(holder) and time.monotonic() < deadline:
        time.sleep(0.05)  # the parent-death signal is on its way
    assert b"sleep" not in _cmdline(holder), "the namespace's holder outlived the service"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_exec_refuses_a_link_directory_others_may_write(run_dir: Path) -> None:
    run_dir.chmod(0o777)
    done = run_cli(
        "sandbox-userns", "--service-user", "65534", "--sandbox-user", "61234", "--exec",
        "--", "/bin/true",
        cwd=run_dir, env={**os.environ, SANDBOX_USERNS_ENV: str(run_dir / "userns")},
    )  # fmt: skip
    assert done.code == 2 and "no one else may write" in done.stderr, done.stderr
    assert not os.path.lexists(run_dir / "userns")


def test_root_is_sent_to_the_service_user_where_the_service_runs(run_dir: Path) -> None:
    """`docker compose exec` without -u: root there would write root's files into the
    service's state and could not sandbox a drill; told how to run it instead."""
    env = {**clean_env(run_dir / "state"), SANDBOX_USERNS_ENV: "/run/sbtc-ops/sandbox-userns"}
    done = run_cli("backups", "--json", cwd=run_dir, env=env)
    assert done.code == 2
    assert "docker compose exec -u 10001:10001" in json.loads(done.stdout)["error"]
    assert not (run_dir / "state").exists()
    assert run_cli("version", cwd=run_dir, env=env).code == 0
