"""`sbtc-ops audit` as a process: exit codes, --json, --html, --only, --root, --probe, no secrets."""

from __future__ import annotations

import json
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.audit import load_scenario
from tests.support.cli import CliResult

MY_AREAS = "access,firewall,secrets,keys"


def env_values(path: Path) -> list[str]:
    values = []
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            values.append(line.split("=", 1)[1])
    return values


def secret_values(root: Path) -> list[str]:
    """Every value in the scenario's .env files that is a real secret (not a host name or a
    published default like 'postgres'/'devnet', which are public knowledge)."""
    public = {"postgres", "devnet", "bitcoin", "stacks-blockchain", "signer", "signer-rpc"}
    values = env_values(root / "opt/sbtc/.env")
    return [v for v in values if v not in public and not v.startswith(("signer-", "AKIA"))]


def assert_no_secrets(texts: list[str], secrets: list[str]) -> None:
    assert secrets, "the scenario must hold secrets for this test to mean anything"
    for text in texts:
        for secret in secrets:
            assert secret not in text
            assert secret.upper() not in text


def test_weak_root_json_html_and_no_secret_anywhere(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scenario = load_scenario("weak", tmp_path, {"opt/sbtc/.env": 0o644})
    html = tmp_path / "report.html"
    result = cli(
        "--config",
        str(scenario.settings_file),
        "audit",
        "--root",
        str(scenario.root),
        "--only",
        MY_AREAS,
        "--json",
        "--html",
        str(html),
    )
    assert result.code == 1, result.stderr
    doc = result.json()
    ids = {f["id"]: f["status"] for f in doc["findings"]}
    assert doc["areas"] == ["access", "firewall", "secrets", "keys"]
    # --root: commands are not run, so sshd's files are the evidence.
    assert ids["SSH-001"] == "fail"
    assert ids["SSH-003"] == "fail"
    assert ids["FW-001"] == "skip"
    assert ids["KEY-002"] == "fail"
    assert ids["SEC-004"] == "fail"
    finding = next(f for f in doc["findings"] if f["id"] == "SSH-001")
    assert set(finding) >= {"area", "title", "severity", "section", "rationale", "remediation"}
    assert isinstance(doc["score"], int)
    assert doc["summary"]["fail"] >= 8
    page = html.read_text()
    assert stat.S_IMODE(html.stat().st_mode) == 0o600
    assert "SSH-005" in page and "reviewed by" in page
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert_no_secrets([result.stdout, result.stderr, page], secret_values(scenario.root))


def test_terminal_report_groups_by_area_and_fail_on(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scenario = load_scenario(
        "hardened", tmp_path, {"opt/sbtc/.env": 0o600, "opt/sbtc/nodes/.env": 0o600}
    )
    args = ("--config", str(scenario.settings_file), "audit", "--root", str(scenario.root))
    result = cli(*args, "--only", MY_AREAS)
    assert result.code == 0, result.stdout + result.stderr
    out = result.stdout
    headers = [out.index(f"\n{area}\n") for area in MY_AREAS.split(",")]
    assert headers == sorted(headers)
    assert "Hardening score:" in out and "KEY-003" in out
    assert_no_secrets([out, result.stderr], secret_values(scenario.root))
    # KEY-003 warns (no verified backup recorded): at --fail-on warn that is exit 1.
    assert cli(*args, "--only", MY_AREAS, "--fail-on", "warn").code == 1
    # The subcommand form runs one area.
    only_fw = cli(*args, "firewall", "--json")
    assert only_fw.code == 0
    assert {f["area"] for f in only_fw.json()["findings"]} == {"firewall"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("audit", "--only", "nope"), "unknown audit area"),
        (("audit", "--root", "/does/not/exist"), "not a directory"),
        (("audit", "firewall", "--probe", "127.0.0.1:1-2000"), "at most 1024 ports"),
        (("audit", "firewall", "--probe", "127.0.0.1:http"), "not a port"),
        (("audit", "firewall", "--probe", "no-such-host.invalid:22"), "cannot resolve"),
    ],
)
def test_cannot_run_is_exit_2_with_a_message(
    cli: Callable[..., CliResult], args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_probe_reports_open_ports_outside_the_allowed_set(
    cli: Callable[..., CliResult], listener: int
) -> None:
    closed = _free_port()
    result = cli("audit", "firewall", "--probe", f"127.0.0.1:{listener},{closed}", "--json")
    assert result.code == 0  # an unexpected but not critical port is a warning
    (finding,) = result.json()["findings"]
    assert finding["id"] == "FW-101"
    assert finding["status"] == "warn"
    states = {item["port"]: item["state"] for item in finding["data"]["items"]}
    assert states == {listener: "open", closed: "closed"}
    strict = cli(
        "audit", "firewall", "--probe", f"127.0.0.1:{listener}", "--fail-on", "warn", "--json"
    )
    assert strict.code == 1
    json.loads(strict.stdout)  # one JSON document, nothing else on stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_list_describes_every_check(cli: Callable[..., CliResult]) -> None:
    result = cli("audit", "--list", "--only", MY_AREAS, "--json")
    assert result.code == 0
    checks = result.json()["checks"]
    ids = [c["id"] for c in checks]
    assert len(ids) == len(set(ids)) == 25
    assert {c["area"] for c in checks} == set(MY_AREAS.split(","))
    for entry in checks:
        assert entry["rationale"] and entry["remediation"] and entry["section"], entry["id"]
        assert entry["severity"] in ("low", "medium", "high", "critical")


def test_docs_list_every_check_of_these_areas() -> None:
    from sbtc_ops.audit.framework import select_checks

    doc = (Path(__file__).resolve().parent.parent / "docs" / "audit.md").read_text()
    missing = [c.id for c in select_checks(MY_AREAS.split(",")) if f"| {c.id} |" not in doc]
    assert not missing, f"docs/audit.md lacks {missing}"
