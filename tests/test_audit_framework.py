"""The audit framework: runner, timeouts, skips, errors, caching, scrubbing, score, renderers."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sbtc_ops.audit.framework import (
    Check,
    CommandResult,
    CommandTimeout,
    HostContext,
    HostFileError,
    Outcome,
    RecordedRunner,
    Severity,
    Skip,
    SubprocessRunner,
    ToolMissing,
    failed,
    passed,
    run_audit,
    select_checks,
    warned,
)
from sbtc_ops.audit.render import render_html, report_document, write_html
from sbtc_ops.config import Settings
from sbtc_ops.errors import UsageError
from sbtc_ops.results import Status
from tests.support.backup import wait_gone
from tests.support.browser import dump_dom, needs_chromium

SECRET_PASSWORD = "s3cr3t-Pa55word-xyz"


def make_check(
    check_id: str,
    func: Callable[[HostContext], Outcome],
    severity: Severity = Severity.MEDIUM,
    timeout_s: float | None = None,
) -> Check:
    return Check(
        check_id,
        "test",
        f"title {check_id}",
        severity,
        "section",
        "rationale",
        "default fix",
        func,
        timeout_s,
    )


def settings_with_secret() -> Settings:
    return Settings.model_validate(
        {"db": {"url": f"postgresql://signer:{SECRET_PASSWORD}@db:5432/signer"}}
    )


def test_statuses_errors_skips_and_timeouts_never_crash(tmp_path: Path) -> None:
    def boom(ctx: HostContext) -> Outcome:
        raise RuntimeError("parser exploded")

    def skipper(ctx: HostContext) -> Outcome:
        raise Skip("not configured")

    def hangs(ctx: HostContext) -> Outcome:
        time.sleep(5)
        return passed("too late")

    checks = [
        make_check("T-001", lambda ctx: passed("fine")),
        make_check("T-002", lambda ctx: warned("meh")),
        make_check("T-003", lambda ctx: failed("bad", remediation="specific fix")),
        make_check("T-004", skipper),
        make_check("T-005", boom),
        make_check("T-006", hangs, timeout_s=0.3),
    ]
    ctx = HostContext(Settings(), root=tmp_path, runner=RecordedRunner({}))
    report = run_audit(ctx, checks, concurrency=2)
    by_id = {f.id: f for f in report.findings}
    assert [f.id for f in report.findings] == [c.id for c in checks]
    assert {k: f.status for k, f in by_id.items()} == {
        "T-001": Status.PASS,
        "T-002": Status.WARN,
        "T-003": Status.FAIL,
        "T-004": Status.SKIP,
        "T-005": Status.ERROR,
        "T-006": Status.ERROR,
    }
    assert by_id["T-001"].remediation is None
    assert by_id["T-002"].remediation == "default fix"
    assert by_id["T-003"].remediation == "specific fix"
    assert "parser exploded" in by_id["T-005"].detail
    assert "did not finish within 0.3s" in by_id["T-006"].detail
    assert by_id["T-004"].detail == "not configured"
    assert report.duration_s < 4  # the hung check (sleep 5) was not waited for
    assert [f.id for f in report.at_or_above(Status.FAIL)] == ["T-003", "T-005", "T-006"]
    assert [f.id for f in report.at_or_above(Status.WARN)] == [
        "T-002",
        "T-003",
        "T-005",
        "T-006",
    ]


def test_score_weights_severity_and_ignores_skips(tmp_path: Path) -> None:
    checks = [
        make_check("T-001", lambda ctx: passed("ok"), Severity.CRITICAL),  # 5 of 5
        make_check("T-002", lambda ctx: warned("half"), Severity.LOW),  # 0.5 of 1
        make_check("T-003", lambda ctx: failed("no"), Severity.HIGH),  # 0 of 3
        make_check("T-004", lambda ctx: Outcome(Status.SKIP, "n/a"), Severity.CRITICAL),
    ]
    report = run_audit(HostContext(Settings(), root=tmp_path, runner=RecordedRunner({})), checks)
    assert report.score == round(100 * 5.5 / 9)
    assert report.counts() == {"pass": 1, "warn": 1, "fail": 1, "skip": 1, "error": 0}
    empty = run_audit(HostContext(Settings(), root=tmp_path, runner=RecordedRunner({})), [])
    assert empty.score is None


def test_identical_commands_run_once_across_concurrent_checks(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    gate = threading.Lock()

    def slow_nft(argv: Sequence[str], timeout: float) -> CommandResult:
        with gate:
            calls.append(argv)
        time.sleep(0.2)
        return CommandResult(tuple(argv), 0, "shared output")

    runner = RecordedRunner({"nft -j list ruleset": slow_nft})
    ctx = HostContext(Settings(), root=tmp_path, runner=runner)
    checks = [
        make_check(f"T-00{i}", lambda ctx: passed(ctx.run(["nft", "-j", "list", "ruleset"]).stdout))
        for i in range(1, 6)
    ]
    report = run_audit(ctx, checks, concurrency=5)
    assert {f.detail for f in report.findings} == {"shared output"}
    assert len(calls) == 1


def test_missing_tool_is_a_skip_and_failed_command_names_its_complaint(tmp_path: Path) -> None:
    runner = RecordedRunner(
        {"ufw status verbose": CommandResult(("ufw",), 1, "", "ERROR: You need to be root")}
    )
    ctx = HostContext(Settings(), root=tmp_path, runner=runner)
    checks = [
        make_check("T-001", lambda ctx: passed(ctx.run_ok(["nft", "list", "ruleset"]).stdout)),
        make_check("T-002", lambda ctx: passed(ctx.run_ok(["ufw", "status", "verbose"]).stdout)),
    ]
    first, second = run_audit(ctx, checks).findings
    assert (first.status, first.detail) == (Status.SKIP, "nft is not installed")
    assert second.status is Status.SKIP
    assert "You need to be root" in second.detail


def test_secrets_are_scrubbed_from_every_string(tmp_path: Path) -> None:
    def leaky(ctx: HostContext) -> Outcome:
        return failed(
            f"found password {SECRET_PASSWORD} in a file",
            remediation=f"rotate {SECRET_PASSWORD.upper()}",
            items=[{"line": f"PASSWORD={SECRET_PASSWORD}"}],
        )

    def crashes(ctx: HostContext) -> Outcome:
        raise ValueError(f"cannot parse {SECRET_PASSWORD}")

    ctx = HostContext(settings_with_secret(), root=tmp_path, runner=RecordedRunner({}))
    report = run_audit(ctx, [make_check("T-001", leaky), make_check("T-002", crashes)])
    text = str(report_document(report)) + render_html(report)
    assert SECRET_PASSWORD not in text
    assert SECRET_PASSWORD.upper() not in text
    assert "**********" in text


def test_secrets_added_by_concurrent_checks_are_all_kept(tmp_path: Path) -> None:
    ctx = HostContext(Settings(), root=tmp_path, runner=RecordedRunner({}))
    # 8 × 50: every add also rebuilds the process-wide redaction pattern over all secrets
    # registered so far (redact._Registry), so the cost grows with the square of the count;
    # 8 × 200 took ~45 s of the suite for no more interleavings than the 1 µs switch interval
    # already forces.
    per_thread = 50
    found = [f"found-secret-{thread}-{n:03d}" for thread in range(8) for n in range(per_thread)]
    start = threading.Barrier(8)

    def add(thread: int) -> None:
        start.wait()
        for value in found[thread * per_thread : (thread + 1) * per_thread]:
            ctx.add_secret(value)

    # Switch threads often so that unsynchronised read-modify-writes would lose secrets.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=add, args=(t,)) for t in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    leaked = [value for value in found if ctx.scrub(value) == value]
    assert leaked == []


def test_file_reads_honour_root_and_refuse_special_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "thing.conf").write_bytes(b"ok \xff\xfe garbage")
    os.mkfifo(tmp_path / "etc" / "pipe")
    ctx = HostContext(Settings(), root=tmp_path, runner=RecordedRunner({}))
    assert ctx.read_text("/etc/thing.conf").startswith("ok ")
    assert ctx.read_optional("/etc/missing") is None
    assert ctx.glob("/etc/*.conf") == [Path("/etc/thing.conf")]
    with pytest.raises(HostFileError, match="not a regular file"):
        ctx.read_text("/etc/pipe")  # would block forever if opened
    with pytest.raises(HostFileError, match="does not exist"):
        ctx.read_text("/etc/missing")
    # A path already inside the root (e.g. from settings pointing into the tree) is kept.
    assert ctx.host_path(tmp_path / "etc" / "thing.conf") == tmp_path / "etc" / "thing.conf"


def test_subprocess_runner_kills_a_hung_command_and_its_children(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pidfile = tmp_path / "child.pid"
    script = bindir / "hangs"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    garbage = bindir / "garbage"
    garbage.write_text("#!/bin/sh\nprintf '\\377\\376 not json'\n")
    garbage.chmod(0o755)
    runner = SubprocessRunner(path_prepend=[bindir])
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5s"):
        runner(["hangs"], 0.5)
    assert time.monotonic() - start < 30  # killed, not waited for (sleep 60)
    child = int(pidfile.read_text())
    assert wait_gone(child), "the hung command's child outlived the timeout"
    assert "not json" in runner(["garbage"], 5).stdout
    with pytest.raises(ToolMissing):
        runner(["no-such-tool-here"], 1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_unknown_area_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown audit area"):
        select_checks(["nope"])


def test_settings_secrets_cover_key_and_urls(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "signer": {
                "private_key": SecretStr("AB" * 32),
                "bitcoin_rpc_endpoints": ["http://btc:rpcpass-123456@bitcoin:8332"],
            }
        }
    )
    ctx = HostContext(settings, root=tmp_path, runner=RecordedRunner({}))
    assert ctx.scrub("key " + "ab" * 32 + " pw rpcpass-123456") == "key ********** pw **********"


def test_an_area_module_that_fails_to_import_is_an_error_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import pkgutil

    from sbtc_ops.audit import registry

    real_iter, real_import = pkgutil.iter_modules, importlib.import_module

    def iter_modules(path: object) -> list[pkgutil.ModuleInfo]:
        return [*real_iter(path), pkgutil.ModuleInfo(None, "halfwritten", False)]  # type: ignore[arg-type]

    def import_module(name: str) -> object:
        if name.endswith(".halfwritten"):
            raise SyntaxError("invalid syntax (halfwritten.py, line 3)")
        return real_import(name)

    monkeypatch.setattr(registry.pkgutil, "iter_modules", iter_modules)
    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    monkeypatch.setattr(registry, "LOAD_ERRORS", {})
    checks = select_checks()
    assert any(c.area == "access" for c in checks)  # the others still load
    ctx = HostContext(Settings(), root=tmp_path, runner=RecordedRunner({}))
    broken = run_audit(ctx, [c for c in checks if c.id.startswith("LOAD-")]).findings
    assert [(f.id, f.area, f.status) for f in broken] == [("LOAD-001", "halfwritten", Status.ERROR)]
    assert "invalid syntax" in broken[0].detail


def _mixed_report(tmp_path: Path) -> Any:
    checks = [
        make_check("T-001", lambda ctx: passed("fine"), Severity.CRITICAL),
        make_check("T-002", lambda ctx: Outcome(Status.SKIP, "n/a"), Severity.HIGH),
        make_check("T-003", lambda ctx: failed("minor"), Severity.LOW),
        make_check("T-004", lambda ctx: warned("meh"), Severity.MEDIUM),
        make_check("T-005", lambda ctx: failed("worst"), Severity.CRITICAL),
    ]
    return run_audit(HostContext(Settings(), root=tmp_path, runner=RecordedRunner({})), checks)


def test_the_html_report_lists_failures_first_by_severity_with_contents(tmp_path: Path) -> None:
    page = render_html(_mixed_report(tmp_path))
    rows = re.findall(r"<tr id='finding-(T-\d+)' data-status=(\w+)>", page)
    # Failed (critical before low), then warnings, then passed, then skipped.
    assert rows == [
        ("T-005", "fail"),
        ("T-003", "fail"),
        ("T-004", "warn"),
        ("T-001", "pass"),
        ("T-002", "skip"),
    ]
    toc = page[page.index("<nav id=toc>") : page.index("</nav>")]
    assert page.index("<nav id=toc>") < page.index("<tr id='finding-")
    for target in ("section-fail", "section-warn", "section-pass", "section-skip", "review"):
        assert f"href='#{target}'" in toc and f"id={target}" in page
    assert toc.index("#finding-T-005") < toc.index("#finding-T-003")
    assert "#finding-T-001" not in toc  # passing checks are counted, not listed


@needs_chromium
def test_the_html_report_in_chromium_starts_with_the_worst_failure(tmp_path: Path) -> None:
    report_path = tmp_path / "report.html"
    write_html(_mixed_report(tmp_path), report_path)
    dom = dump_dom(report_path.as_uri(), tmp_path / "profile")
    statuses = re.findall(r'<tr id="finding-(T-\d+)" data-status="(\w+)">', dom)
    assert statuses[0] == ("T-005", "fail") and statuses[-1] == ("T-002", "skip")
    assert '<nav id="toc">' in dom and 'href="#finding-T-005"' in dom
