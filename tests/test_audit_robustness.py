"""Robustness: unreadable files, missing tools, hung commands, garbage output, bad operator
files. Every case ends as skip or error with a reason, never a crash."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbtc_ops.audit.framework import (
    AuditReport,
    HostContext,
    RecordedRunner,
    SubprocessRunner,
    run_audit,
    select_checks,
)
from tests.support.audit import FIXTURE_NOW, load_scenario, statuses
from tests.support.backup import wait_gone

MY_AREAS = ["access", "firewall", "secrets", "keys"]
WEAK_MODES = {"opt/sbtc/.env": 0o644, "opt/sbtc/nodes/.env": 0o644}


def details(report: AuditReport) -> dict[str, str]:
    return {f.id: f.detail for f in report.findings}


def test_missing_tools_are_skips_with_reasons(tmp_path: Path) -> None:
    scenario = load_scenario("weak", tmp_path, WEAK_MODES)
    ctx = HostContext(scenario.settings(), root=scenario.root, runner=RecordedRunner({}))
    report = run_audit(ctx, select_checks(MY_AREAS))
    found, why = statuses(report), details(report)
    assert found["FW-001"] == found["FW-002"] == found["FW-003"] == "skip"
    assert "nft is not installed" in why["FW-001"]
    assert "ufw is not installed" in why["FW-001"]
    assert found["FW-005"] == "skip" and why["FW-005"] == "ss is not installed"
    # Without sshd the config files are read (cloud-init drop-in included).
    assert found["SSH-001"] == "fail"
    assert "/etc/ssh/sshd_config; sshd is not installed" in why["SSH-001"]
    # The docker bypass is still judged from the compose files.
    assert found["FW-004"] == "fail"


def test_hung_commands_time_out_and_are_killed(tmp_path: Path) -> None:
    scenario = load_scenario("weak", tmp_path / "scenario", WEAK_MODES)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pids = tmp_path / "pids"
    pids.mkdir()
    for tool in ("nft", "sshd", "ss"):
        script = bindir / tool
        script.write_text(f"#!/bin/sh\necho $$ > {pids}/{tool}\nexec sleep 60\n")
        script.chmod(0o755)
    ctx = HostContext(
        scenario.settings(),
        root=scenario.root,
        runner=SubprocessRunner(path_prepend=[bindir]),
        now=FIXTURE_NOW,
        command_timeout_s=0.5,
    )
    report = run_audit(ctx, select_checks(MY_AREAS))
    found, why = statuses(report), details(report)
    assert found["FW-001"] == "error"
    assert why["FW-001"] == "`nft -j list ruleset` did not finish within 0.5s (killed)"
    assert found["FW-005"] == "error"
    # sshd -T hung: the config files are used instead.
    assert found["SSH-001"] == "fail"
    assert "did not finish within 0.5s" in why["SSH-001"]
    assert found["FW-004"] == "fail"  # compose evidence does not depend on nft
    for pidfile in pids.iterdir():
        assert wait_gone(int(pidfile.read_text())), f"{pidfile.name} survived"


def test_garbage_command_output_is_an_error_not_a_crash(tmp_path: Path) -> None:
    scenario = load_scenario("weak", tmp_path, WEAK_MODES)
    garbage = '\x00\ufffd<html>502 Bad Gateway</html>\n{"nftables": 12'
    runner = RecordedRunner(
        {
            "nft -j list ruleset": garbage,
            "sshd -T": "Usage: sshd [-46DdeGiqTtV] [-C connection_spec]\n",
            "ss -Htuln": "State Recv-Q Send-Q\nsomething: else entirely\n",
            "docker ps --format {{.Names}}\t{{.Ports}}": garbage,
            "sshd -T -C user=backup,host=unknown,addr=203.0.113.1": garbage,
        }
    )
    ctx = HostContext(scenario.settings(), root=scenario.root, runner=runner, now=FIXTURE_NOW)
    report = run_audit(ctx, select_checks(MY_AREAS))
    found, why = statuses(report), details(report)
    assert found["FW-001"] == "error"
    assert "not libnftables JSON" in why["FW-001"]
    assert found["FW-005"] == "error"
    assert "looks like a socket table" in why["FW-005"]
    assert found["SSH-001"] == "fail"  # from the config files
    assert "not `sshd -T` output" in why["SSH-001"]
    assert found["FW-004"] == "fail"


def test_malformed_operator_files(tmp_path: Path) -> None:
    scenario = load_scenario("weak", tmp_path, WEAK_MODES)
    (scenario.root / "etc/sbtc-ops/secrets.toml").write_text("[[secret]\nname = 'x'\n")
    (scenario.root / "opt/sbtc/docker-compose.yml").write_text("services: [unclosed\n  - x: 1\n")
    (scenario.root / "etc/sbtc-ops/roster.toml").write_bytes(b"\xff\xfe\x00garbage = ")
    report = scenario.audit("access", "secrets")
    found, why = statuses(report), details(report)
    assert found["SEC-001"] == "error" and "not valid TOML" in why["SEC-001"]
    assert found["SEC-002"] == "error"
    assert found["IMG-001"] == "error" and "not valid YAML" in why["IMG-001"]
    assert found["SEC-005"] == "error" and "roster.toml" in why["SEC-005"]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp root is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sbtc-audit-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unreadable_files_as_an_unprivileged_user(shared_tmp: Path) -> None:
    """Run the audit in a forked child that dropped to `nobody` (the venv's interpreter lives
    under /root here, so a fresh process as nobody could not even start): files it cannot
    read become skips that say why, everything readable is still audited."""
    if os.geteuid() != 0:
        pytest.skip("needs root to prepare files an unprivileged user cannot read")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account to run as")
    scenario = load_scenario("weak", shared_tmp, WEAK_MODES)
    for private, mode in {
        "etc/ssh/sshd_config": 0o600,
        "etc/sudoers": 0o440,
        "home/alice": 0o700,
        "home/bob/.ssh": 0o700,
        "root": 0o700,
        "opt/sbtc/postgres": 0o700,
    }.items():
        (scenario.root / private).chmod(mode)
    settings = scenario.settings()
    checks = select_checks(["access", "keys"])
    as_root = run_audit(HostContext(settings, root=scenario.root, now=FIXTURE_NOW), checks)
    assert statuses(as_root)["SSH-001"] == "fail"  # root reads everything (modules loaded)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            report = run_audit(HostContext(settings, root=scenario.root, now=FIXTURE_NOW), checks)
            doc = {f.id: [f.status.value, f.detail] for f in report.findings}
            os.write(write_end, json.dumps(doc).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    found = json.loads(output)
    for check_id in ("SSH-001", "SSH-002", "SSH-003", "SSH-005", "SUDO-001"):
        state, detail = found[check_id]
        assert state == "skip", (check_id, detail)
        assert "permission denied (run as root)" in detail
    assert found["DB-002"][0] == "skip"  # pg_hba.conf under a 0700 directory
    assert found["SSH-004"][0] == "skip"
    assert found["KEY-002"][0] == "fail"  # what is readable is still audited


def test_a_check_abandoned_at_its_timeout_leaves_no_process(tmp_path: Path) -> None:
    from sbtc_ops.audit.framework import Check, Outcome, Severity, passed

    bindir = tmp_path / "bin"
    bindir.mkdir()
    pidfile = tmp_path / "slow.pid"
    script = bindir / "slowtool"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    script.chmod(0o755)

    def waits_on_a_slow_tool(ctx: HostContext) -> Outcome:
        return passed(ctx.run(["slowtool"], timeout=60).stdout)

    check = Check("T-001", "test", "slow", Severity.LOW, "s", "r", "fix", waits_on_a_slow_tool, 0.5)
    ctx = HostContext(
        load_scenario("hardened", tmp_path / "s").settings(),
        root=tmp_path,
        runner=SubprocessRunner(path_prepend=[bindir]),
    )
    (finding,) = run_audit(ctx, [check]).findings
    assert (finding.status.value, finding.detail) == ("error", "did not finish within 0.5s")
    assert wait_gone(int(pidfile.read_text()))
