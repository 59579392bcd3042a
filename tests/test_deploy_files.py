"""deploy/: alert rules checked and unit-tested by the real promtool, every alert and
dashboard query refers to series sbtc-ops exports, systemd units accepted by
systemd-analyze and hardened, the compose service hardened and read-only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sbtc_ops.backup.inuse import LOCKS_DIR
from sbtc_ops.backup.take import STAGING_SUBDIR
from sbtc_ops.pg.template import TEMPLATES_SUBDIR
from sbtc_ops.serve.metrics import registry_for
from tests.support.cli import sbtc_ops_executable
from tests.support.serve import NOW, populate
from tests.support.signer_state import record_signer_check

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "sbtc-ops-alerts.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus").glob("*.test.yml"))
DASHBOARD = DEPLOY / "grafana" / "sbtc-ops-dashboard.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool is not installed (Debian: prometheus)"
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


@needs_promtool
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    assert len(RULE_TESTS) == 2
    tested = promtool("test", "rules", *(t.name for t in RULE_TESTS), cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("> 26 * 3600", "> > 26"))
    assert promtool("check", "rules", str(broken), cwd=tmp_path).returncode != 0


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} never tested quiet"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def exported_names(tmp_path: Path) -> set[str]:
    populate(tmp_path / "state")
    record_signer_check(tmp_path / "state", NOW - 60)  # the signer's own state (signer-check)
    text = generate_latest(registry_for(tmp_path / "state", lambda: NOW)).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
    # Series that appear only in a deployment with the DKG watch running.
    names.add("sbtc_ops_dkg_unprotected_seconds")
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bsbtc_ops_[a-z_]+\b", expr))


def test_rules_and_dashboard_only_use_exported_series(tmp_path: Path) -> None:
    names = exported_names(tmp_path)
    for rule in alert_rules():
        missing = referenced(rule["expr"]) - names
        assert not missing, f"{rule['alert']} uses unknown series {missing}"
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        assert not referenced(expr) - names, expr
    # No query groups by "job": that is Prometheus' own target label.
    assert not any(re.search(r"\bby \([^)]*\bjob\b", e) for e in exprs)


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "sbtc-ops"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    rules = [
        {"record": f"sbtc_ops_dashboard_check_{i}", "expr": t["expr"].replace("$instance", ".*")}
        for i, panel in enumerate(dashboard["panels"])
        for t in panel["targets"]
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def unit(name: str) -> dict[str, list[str]]:
    """Directives of a systemd unit file: KEY → values (repeatable keys keep all)."""
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", ["sbtc-ops.service", "sbtc-ops-job@.service"])
def test_systemd_units_are_hardened(name: str) -> None:
    directives = unit(name)
    expected = {
        "User": "sbtc-ops",
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "KillMode": "mixed",
    }
    for key, value in expected.items():
        assert directives.get(key) == [value], f"{name}: {key}"
    writable = directives["ReadWritePaths"][0].split()
    assert "/var/backups/sbtc-ops" in writable
    # The state directory and every subdirectory sbtc-ops makes there (statedir.py): under
    # RestrictSUIDSGID= only systemd can give them their setgid mode.
    subdirs = (LOCKS_DIR, STAGING_SUBDIR, TEMPLATES_SUBDIR)
    assert directives["RestrictSUIDSGID"] == ["true"]
    assert directives["StateDirectory"] == [
        " ".join(["sbtc-ops", *(f"sbtc-ops/{d}" for d in subdirs)])
    ]
    assert "serve" in directives["ExecStart"][0]


def test_every_state_subdirectory_is_one_the_units_make() -> None:
    """Each make_state_subdir() call names one of the constants the units list."""
    source = Path(__file__).resolve().parent.parent / "src" / "sbtc_ops"
    calls = [
        match.group(1)
        for path in source.rglob("*.py")
        for match in re.finditer(r"(?<!def )make_state_subdir\(([^)]*)\)", path.read_text())
    ]
    names = {call.split(",")[-1].strip() for call in calls}
    # (pg/template.py's root is state_dir / TEMPLATES_SUBDIR)
    assert names == {"LOCKS_DIR", "STAGING_SUBDIR", "self.root.name"}, names


def test_timers_start_the_job_template_and_catch_up() -> None:
    timers = sorted((DEPLOY / "systemd").glob("*.timer"))
    jobs = {t.stem.removeprefix("sbtc-ops-") for t in timers}
    assert jobs == {"backup", "verify-rotate", "audit", "chain-check"}
    for timer in timers:
        directives = unit(timer.name)
        job = timer.stem.removeprefix("sbtc-ops-")
        assert directives["Unit"] == [f"sbtc-ops-job@{job}.service"]
        assert directives["Persistent"] == ["true"]
    assert "--metrics-textfile" in unit("sbtc-ops-job@.service")["ExecStart"][0]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    executable = sbtc_ops_executable()  # ExecStart must name an existing executable
    for source in (DEPLOY / "systemd").iterdir():
        text = source.read_text().replace("/usr/local/bin/sbtc-ops", executable)
        (tmp_path / source.name).write_text(text)
    shutil.copy(tmp_path / "sbtc-ops-job@.service", tmp_path / "sbtc-ops-job@backup.service")
    names = ["sbtc-ops.service", "sbtc-ops-job@backup.service", "sbtc-ops-backup.timer"]
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(f"./{n}" for n in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    warnings = [line for line in done.stderr.splitlines() if "sbtc-ops" in line]
    assert done.returncode == 0 and not warnings, done.stderr


def test_compose_service_is_read_only_and_unprivileged() -> None:
    doc = yaml.safe_load((DEPLOY / "compose" / "docker-compose.sbtc-ops.yml").read_text())
    service = doc["services"]["sbtc-ops"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    # Root only for the entrypoint's first step (the sandbox user's namespace), with SETUID
    # and SETGID alone; the entrypoint then runs sbtc-ops as 10001 (tests/test_docker_*).
    assert service["user"] == "0:0"
    assert sorted(service["cap_add"]) == ["SETGID", "SETUID"]
    entrypoint = dockerfile_entrypoint()
    assert entrypoint[:2] == ["sbtc-ops", "sandbox-userns"] and "--exec" in entrypoint
    assert entrypoint[entrypoint.index("--service-user") + 1] == "10001:10001"
    assert service["environment"]["SBTC_OPS_SANDBOX_USERNS"].startswith("/run/sbtc-ops/")
    assert any(t.startswith("/run/sbtc-ops:") and "mode=0755" in t for t in service["tmpfs"])
    config_mounts = [v for v in service["volumes"] if v.split(":")[1].startswith("/etc/")]
    assert config_mounts and all(v.endswith(":ro") for v in config_mounts)
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "serve" in service["command"]
    assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_alloy_snippet_scrapes_sbtc_ops_without_inline_credentials() -> None:
    text = (DEPLOY / "alloy" / "sbtc-ops.alloy").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    assert code.count("{") == code.count("}")
    assert 'prometheus.scrape "sbtc_ops"' in code and "127.0.0.1:9185" in code
    assert re.search(r'password\s*=\s*sys\.env\("', code)
    assert not re.search(r'password\s*=\s*"', code)


def dockerfile_entrypoint(path: Path = DEPLOY / "compose" / "Dockerfile") -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ENTRYPOINT "))
    return list(json.loads(line.removeprefix("ENTRYPOINT ")))


@pytest.mark.parametrize("name", ["sbtc-ops.service", "sbtc-ops-job@.service"])
def test_units_prepare_and_release_the_sandbox_users_namespace(name: str) -> None:
    """Root (`+`) keeps the namespace at the path the service is told, and releases it."""
    directives = unit(name)
    (prepare,) = directives["ExecStartPre"]
    (release,) = directives["ExecStopPost"]
    # In PID 1's mount namespace: a `+` line's own would keep the mount from the service's.
    in_pid1 = "+/usr/bin/nsenter --mount=/proc/1/ns/mnt -- "
    assert prepare.startswith(f"{in_pid1}/usr/local/bin/sbtc-ops sandbox-userns ")
    assert release.startswith(f"{in_pid1}/usr/local/bin/sbtc-ops sandbox-userns --release ")
    kept = prepare.split("--keep-at ", 1)[1].split()[0]
    told = [v for v in directives["Environment"] if v.startswith("SBTC_OPS_SANDBOX_USERNS=")]
    assert told == [f"SBTC_OPS_SANDBOX_USERNS={kept}"]
    assert release.split("--release ", 1)[1] == kept
    # In a directory of root's (sandbox-userns checks it), not the service's RuntimeDirectory.
    assert kept.startswith("/run/sbtc-ops-sandbox/") and "RuntimeDirectory" not in directives
    assert "--service-user sbtc-ops " in prepare and "--sandbox-user sbtc-ops-sandbox" in prepare


def test_the_labs_image_starts_as_the_shipped_one() -> None:
    """The Docker lab builds its own image (no registry): same entry point, same users."""
    lab = Path(__file__).parent / "lab" / "images" / "sbtc-ops" / "Dockerfile"
    assert dockerfile_entrypoint(lab) == dockerfile_entrypoint()
    for user in ("--uid 10001", "--uid 10002"):
        assert user in lab.read_text() and user in (DEPLOY / "compose" / "Dockerfile").read_text()
