"""Metrics, status verdicts, the status page HTML, `--metrics-textfile`, `history` and
webhooks, from state recorded directly through StateStore (no job needed)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from sbtc_ops.host.endpoints import public_url
from sbtc_ops.redact import scrub
from sbtc_ops.serve.children import result_from_child
from sbtc_ops.serve.metrics import registry_for
from sbtc_ops.serve.notify import FAILURE, RECOVERY, Notifier, transition
from sbtc_ops.serve.page import render_page
from sbtc_ops.serve.scheduler import JobResult
from sbtc_ops.serve.snapshot import read_snapshot
from sbtc_ops.state import StateStore
from sbtc_ops.verify.checks import Verdict
from tests.support.cli import CliResult
from tests.support.serve import KEY_A, KEY_B, NOW, WebhookSink, populate


def metrics(state_dir: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry_for(state_dir, lambda: NOW)).decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for lab, v in found[name] if all(lab.get(k) == w for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def test_a_dkg_export_is_never_the_latest_backup(tmp_path: Path) -> None:
    populate(tmp_path)
    with StateStore.open(tmp_path) as store:  # an 88 KiB export after the last full backup
        store.record_event(
            "backup",
            "20260108T000000Z-dkg",
            "ok",
            {"kind": "dkg-only", "size": 90_112, "duration_s": 0.4},
            at=NOW - 600,
        )
        store.record_event("backup", "-", "error", {"kind": "dkg-only"}, at=NOW - 60)
    found = metrics(tmp_path)
    full = {"kind": "full"}
    assert value(found, "sbtc_ops_last_backup_size_bytes", **full) == 1_300_000
    assert value(found, "sbtc_ops_last_backup_duration_seconds", **full) == 16.0
    assert value(found, "sbtc_ops_last_backup_success_age_seconds", **full) == pytest.approx(82800)
    assert value(found, "sbtc_ops_last_backup_success", **full) == 1
    export = {"kind": "dkg-only"}
    assert value(found, "sbtc_ops_last_backup_size_bytes", **export) == 90_112
    assert value(found, "sbtc_ops_last_backup_success_age_seconds", **export) == 600
    assert value(found, "sbtc_ops_last_backup_success", **export) == 0
    snap = read_snapshot(tmp_path, NOW)
    assert snap.last_backup_ok is not None and snap.last_backup_ok.subject == "20260101T060000Z"
    tile = next(v for v in snap.tiles() if v.name == "Backups")
    assert "20260101T060000Z" in tile.detail and "failed" not in tile.detail


def test_metrics_from_recorded_state(tmp_path: Path) -> None:
    populate(tmp_path)
    found = metrics(tmp_path)
    newest_backup = NOW - 86400 + 3600
    assert value(found, "sbtc_ops_last_backup_success_timestamp_seconds") == newest_backup
    assert value(found, "sbtc_ops_last_backup_success_age_seconds") == pytest.approx(82800)
    assert value(found, "sbtc_ops_last_backup_size_bytes") == 1_300_000
    assert value(found, "sbtc_ops_last_backup_duration_seconds") == 16.0
    assert value(found, "sbtc_ops_last_backup_success") == 1
    assert value(found, "sbtc_ops_last_verify_success") == 1
    assert value(found, "sbtc_ops_last_verify_verdict", verdict="match") == 1
    assert value(found, "sbtc_ops_last_verify_verdict", verdict="mismatch") == 0
    assert value(found, "sbtc_ops_last_verify_success_age_seconds") == pytest.approx(82740)
    assert value(found, "sbtc_ops_aggregate_key_match") == 1
    assert value(found, "sbtc_ops_aggregate_key_state", state="match") == 1
    assert value(found, "sbtc_ops_chain_endpoint_up", endpoint="http://stacks-node:20443") == 1
    assert value(found, "sbtc_ops_chain_endpoint_up", endpoint="https://api.hiro.so") == 0
    assert value(found, "sbtc_ops_audit_score") == 71
    assert value(found, "sbtc_ops_audit_findings", area="access", severity="critical") == 1
    assert value(found, "sbtc_ops_job_runs_total", task="backup", outcome="ok") == 7
    assert value(found, "sbtc_ops_job_runs_total", task="chain-check", outcome="problem") == 1
    assert value(found, "sbtc_ops_job_last_run_success", task="audit") == 0
    assert value(found, "sbtc_ops_build_info") == 1


def test_a_failed_verify_and_a_rotated_key(tmp_path: Path) -> None:
    populate(tmp_path, verify_outcome="mismatch")
    found = metrics(tmp_path)
    assert value(found, "sbtc_ops_last_verify_success") == 0
    assert value(found, "sbtc_ops_last_verify_verdict", verdict="mismatch") == 1
    assert value(found, "sbtc_ops_aggregate_key_state", state="mismatch") == 1
    assert value(found, "sbtc_ops_aggregate_key_match") == 0
    # The successful verify before it is still reported for the 8-day rule.
    assert value(found, "sbtc_ops_last_verify_success_timestamp_seconds") < NOW - 86400

    rotated = tmp_path / "rotated"
    populate(rotated, chain_key=KEY_B)
    found = metrics(rotated)
    assert value(found, "sbtc_ops_aggregate_key_state", state="stale") == 1
    assert value(found, "sbtc_ops_aggregate_key_match") == 0
    snap = read_snapshot(rotated, NOW)
    assert {v.name: v.colour for v in snap.tiles()}["Aggregate key"] == "amber"


def test_empty_state_has_build_info_and_no_backup_series(tmp_path: Path) -> None:
    found = metrics(tmp_path)
    assert "sbtc_ops_build_info" in found
    assert "sbtc_ops_last_backup_success_timestamp_seconds" not in found
    assert value(found, "sbtc_ops_aggregate_key_state", state="unknown") == 1
    assert read_snapshot(tmp_path, NOW).overall() == "red"


def test_verdicts_and_page(tmp_path: Path) -> None:
    populate(tmp_path)
    snap = read_snapshot(tmp_path, NOW)
    colours = {v.name: v.colour for v in snap.tiles()}
    assert colours == {
        "Backups": "green",
        "Verification": "green",
        "Aggregate key": "green",
        "Chain endpoints": "amber",
        "Audit": "red",
        "Jobs": "amber",  # the chain-check's last run ended "problem"
    }
    html = render_page(snap)
    assert "data-verdict='red'" in html
    assert "<svg id='backup-chart'" in html and html.count("<circle") == 7
    assert "&lt;script&gt;" in html and "<script" not in html
    assert "20260101T060000Z" in html
    old = read_snapshot(tmp_path, NOW + 3 * 86400)
    assert {v.name: v.colour for v in old.tiles()}["Backups"] == "red"


def test_a_mismatch_against_a_key_typed_by_hand_says_nothing_about_the_key(
    tmp_path: Path,
) -> None:
    populate(tmp_path)
    with StateStore.open(tmp_path) as store:
        store.record_event(
            "verify",
            "20260101T060000Z",
            "mismatch",
            {
                "verdict": "mismatch",
                "db_aggregate_key": KEY_A,
                "onchain_aggregate_key": None,
                "expected_aggregate_key": KEY_B,
                "key_source": "expected (given by hand)",
                "failed_checks": ["dkg.matches_chain"],
            },
            at=NOW - 30,
        )
    snap = read_snapshot(tmp_path, NOW)
    assert snap.key_state == "match"  # the chain reading of the previous verify still holds
    assert {v.name: v.colour for v in snap.tiles()}["Aggregate key"] == "green"


def test_every_tile_and_job_that_is_not_ok_says_why(tmp_path: Path) -> None:
    populate(tmp_path)
    why = "the signer's DKG shares are unverified 12 blocks into the window"
    with StateStore.open(tmp_path) as store:
        run = store.start_run("signer-check", at=NOW - 100)
        store.finish_run(run, "problem", {"summary": why}, at=NOW - 90)
        store.record_event("backup", "-", "error", {"error": "pg_dump: disk full"}, at=NOW - 50)
    snap = read_snapshot(tmp_path, NOW)
    tiles = {v.name: v for v in snap.tiles()}
    assert f"signer-check: problem — {why}" in tiles["Jobs"].detail
    assert tiles["Backups"].detail.endswith("the latest attempt failed: pg_dump: disk full")
    assert "worst:" in tiles["Audit"].detail
    for tile in tiles.values():
        if tile.colour != "green":
            assert len(tile.detail) > 12, tile
    html = render_page(snap, {"signer-check": NOW + 600, "backup": NOW + 3600})
    schedule = html[html.index("id='schedule'") :]
    row = schedule[schedule.index("<td>signer-check</td>") :]
    row = row[: row.index("</tr>")]
    assert "problem" in row and escape(why) in row


def test_metrics_textfile_after_a_command(cli: Callable[..., CliResult], workdir: Path) -> None:
    state = workdir / "state"
    populate(state)
    target = workdir / "textfile" / "sbtc-ops.prom"
    target.parent.mkdir()
    result = cli("--metrics-textfile", str(target), "history", "--json")
    assert result.code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert runs[0]["job"] == "chain-check" and runs[0]["outcome"] == "problem"
    text = target.read_text()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "sbtc_ops_last_backup_success_timestamp_seconds",
        "sbtc_ops_chain_endpoint_up",
    } <= families
    assert os.listdir(target.parent) == ["sbtc-ops.prom"]  # written via a temp file + rename

    # A failing command still writes the file; an unwritable path is exit 2 with a message.
    target.unlink()
    failed = cli("--metrics-textfile", str(target), "history", "--limit", "0")
    assert failed.code == 2 and target.exists()
    bad = cli("--metrics-textfile", str(workdir / "missing-dir" / "x.prom"), "history")
    assert bad.code == 2
    assert "cannot write the metrics textfile" in bad.stderr and "Traceback" not in bad.stderr


def test_history_table_and_filters(cli: Callable[..., CliResult], workdir: Path) -> None:
    populate(workdir / "state")
    table = cli("history", "--job", "verify", "--limit", "3")
    assert table.code == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "verify" in line]
    assert len(lines) == 3
    doc = cli("history", "--json", "--job", "audit").json()
    assert [r["job"] for r in doc["runs"]] == ["audit"]
    assert doc["runs"][0]["data"] == {"score": 71}
    assert doc["runs"][0]["duration_s"] == 5
    empty = cli("history", env={"SBTC_OPS_STATE_DIR": str(workdir / "empty")})
    assert empty.code == 0 and "no runs recorded yet" in empty.stderr


def test_state_db_is_private(tmp_path: Path) -> None:
    populate(tmp_path / "state")
    mode = stat.S_IMODE((tmp_path / "state" / "state.db").stat().st_mode)
    assert mode == 0o600


# -- job plumbing -------------------------------------------------------------------------


def test_child_results_are_parsed_and_a_crash_is_an_error() -> None:
    ok = result_from_child(
        b'log line\n{"outcome": "ok", "summary": "s", "data": {"n": 1}}\n', 0, None
    )
    assert (ok.outcome, ok.summary, ok.data) == ("ok", "s", {"n": 1})
    crashed = result_from_child(b"", -9, None)
    assert crashed.outcome == "error" and "signal 9" in crashed.summary
    garbage = result_from_child(b"Traceback ...", 1, None)
    assert garbage.outcome == "error" and "exit code 1" in garbage.summary
    stopped = result_from_child(b"", -15, "stopped by shutdown")
    assert stopped.outcome == "interrupted"
    late = result_from_child(b"", -15, "timed out after 5 s")
    assert (late.outcome, late.summary) == ("error", "timed out after 5 s")


def test_endpoint_labels_and_scrubbing_never_carry_secrets() -> None:
    assert public_url("https://user:hunter22@node.example:20443/?key=abc") == (
        "https://node.example:20443"
    )
    text = "connect to postgresql://signer:s3cret-pw@db:5432/signer failed; key=topsecretvalue"
    cleaned = scrub(text, ["topsecretvalue"])
    assert "s3cret-pw" not in cleaned and "topsecretvalue" not in cleaned
    assert "postgresql://signer:" in cleaned


# -- webhooks -----------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink([]) as server:
        yield server


def test_transitions() -> None:
    assert transition(None, "error") == FAILURE
    assert transition("ok", "problem") == FAILURE
    assert transition("problem", "error") is None  # still failing: no repeat
    assert transition("error", "ok") == RECOVERY
    assert transition("ok", "ok") is None
    assert transition("ok", "interrupted") is None


def test_failure_and_recovery_are_posted_retried_and_scrubbed(sink: WebhookSink) -> None:
    sink.statuses = [503, 429, 200]
    sleeps: list[float] = []
    notifier = Notifier(
        [SecretStr(sink.url("/hook/token-123"))],
        ["db-password-1"],
        sleep=sleeps.append,
        backoff_s=0.5,
        host="signer-1",
    )
    notifier.on_finish(
        "backup", JobResult("error", "pg_dump: password db-password-1 refused"), "ok"
    )
    notifier.wait(10)
    assert len(sink.bodies) == 3 and sleeps == [0.5, 0.0]
    path, body = sink.bodies[-1]
    assert path == "/hook/token-123"
    assert (body["event"], body["job"], body["outcome"], body["host"]) == (
        "failure", "backup", "error", "signer-1"
    )  # fmt: skip
    assert "db-password-1" not in json.dumps(body) and "**********" in body["summary"]
    notifier.on_finish("backup", JobResult("error", "again"), "error")  # no repeat
    notifier.on_finish("backup", JobResult("ok", "20260101T000000Z"), "error")
    notifier.wait(10)
    assert [b["event"] for _, b in sink.bodies[3:]] == ["recovery"]


def test_a_refused_webhook_is_not_retried_and_never_logged_with_its_url(
    sink: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.statuses = [404]
    notifier = Notifier([SecretStr(sink.url("/hook/secret-token"))], [], sleep=lambda s: None)
    notifier.on_finish("audit", JobResult("problem", "score 40"), None)
    notifier.wait(10)
    assert len(sink.bodies) == 1
    assert "secret-token" not in caplog.text and "HTTP 404" in caplog.text


def test_slack_and_discord_bodies() -> None:
    from sbtc_ops.serve.notify import Notification, body_for, webhook_kind

    note = Notification(
        "failure", "verify", "problem", "20260101T000000Z: mismatch", time.time(), "h"
    )
    assert webhook_kind("https://hooks.slack.com/services/T/B/X") == "slack"
    assert webhook_kind("https://discord.com/api/webhooks/1/abc") == "discord"
    assert webhook_kind("https://alerts.example/hook") == "json"
    slack = body_for("slack", note)
    assert list(slack) == ["text"] and "verify failed (problem)" in slack["text"]
    discord = body_for("discord", note)
    assert set(discord) == {"content", "username"} and "mismatch" in discord["content"]


# -- DKG protection -------------------------------------------------------------------------


def watch_and_backup(state: Path, *, status: str, backed_up_as: str | None) -> None:
    """The watch saw a row created at NOW-1200; maybe a backup taken at NOW-600 holds it."""
    with StateStore.open(state) as store:
        row = {"key": KEY_B, "created_at": NOW - 1200, "status": status}
        store.record_event(
            "dkg-watch", "live", "ok", {"row": row, "since": NOW - 1200}, at=NOW - 1190
        )
        if backed_up_as is not None:
            store.record_event(
                "backup", "20260101T000000Z-dkg", "ok",
                {"kind": "dkg-only", "size": 9000, "duration_s": 0.3,
                 "dkg_created_at": "2026-09-21T13:53:20+00:00",  # NOW - 1200
                 "newest_verified_aggregate_key": backed_up_as},
                at=NOW - 600,
            )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "backed_up_as", "expected", "colour"),
    [
        ("unverified", None, 1200.0, "red"),  # 20 min in no backup: past the 15 min rule
        ("unverified", KEY_A, 0.0, "green"),  # the row is in the backup (unverified then)
        ("verified", KEY_A, 1200.0, "red"),  # verified since, the backup has the older key
        ("verified", KEY_B, 0.0, "green"),
    ],
)
def test_dkg_unprotected_seconds_and_card(
    tmp_path: Path, status: str, backed_up_as: str | None, expected: float, colour: str
) -> None:
    watch_and_backup(tmp_path, status=status, backed_up_as=backed_up_as)
    found = metrics(tmp_path)
    assert value(found, "sbtc_ops_dkg_unprotected_seconds") == expected
    assert value(found, "sbtc_ops_dkg_watch_up") == 1
    cards = {v.name: v.colour for v in read_snapshot(tmp_path, NOW).tiles()}
    assert cards["DKG shares"] == colour


def test_dkg_watch_down_keeps_the_last_observation(tmp_path: Path) -> None:
    watch_and_backup(tmp_path, status="unverified", backed_up_as=None)
    with StateStore.open(tmp_path) as store:
        store.record_event(
            "dkg-watch", "live", "error", {"error": "connection refused"}, at=NOW - 60
        )
    found = metrics(tmp_path)
    assert value(found, "sbtc_ops_dkg_watch_up") == 0
    assert value(found, "sbtc_ops_dkg_unprotected_seconds") == 1200.0
    card = next(v for v in read_snapshot(tmp_path, NOW).tiles() if v.name == "DKG shares")
    assert card.colour == "amber" and "connection refused" in card.detail


def test_config_show_never_prints_a_webhook_token(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    (workdir / "sbtc-ops.toml").write_text(
        '[serve]\nwebhooks = ["https://hooks.slack.com/services/T0/B0/tok-SECRET-42"]\n'
    )
    shown = cli("config", "show")
    assert shown.code == 0, shown.stderr
    assert "tok-SECRET-42" not in shown.stdout + shown.stderr
    assert "https://hooks.slack.com/**********" in shown.stdout


def test_the_weekly_verify_rotates_through_older_backups() -> None:
    from sbtc_ops.serve.jobs import choose_rotation

    def row(backup_id: str, state: str = "complete", kind: str | None = "full") -> dict[str, Any]:
        return {"id": backup_id, "state": state, "kind": kind, "storage": "local"}

    rows = [
        row("20260105T031700Z"),  # newest: verified after its backup, not here
        row("20260104T031700Z"),
        row("20260104T031700Z"),  # the same backup in a second storage
        row("20260103T031700Z", state="verified-ok"),
        row("20260102T031700Z", state="incomplete"),
        row("20260104T120000Z-dkg", kind="dkg-only"),
        row("20260101T031700Z", kind=None),  # an old manifest without a kind
    ]
    verified = {"20260104T031700Z": 300.0, "20260103T031700Z": 100.0, "20260101T031700Z": 200.0}
    assert choose_rotation(rows, lambda b: verified.get(b, 0.0)) == "20260103T031700Z"
    verified["20260103T031700Z"] = 400.0
    assert choose_rotation(rows, lambda b: verified.get(b, 0.0)) == "20260101T031700Z"
    del verified["20260104T031700Z"]  # never verified comes first
    assert choose_rotation(rows, lambda b: verified.get(b, 0.0)) == "20260104T031700Z"
    assert choose_rotation(rows[:1], lambda b: 0.0) is None


def test_an_unwritable_textfile_keeps_stdout_one_json_document(
    cli: Callable[..., CliResult], workdir: Path
) -> None:
    result = cli("--metrics-textfile", str(workdir / "no-such-dir" / "m.prom"), "history", "--json")
    assert result.code == 2
    assert result.json() == {"ok": True, "runs": []}  # json.loads fails on a second document
    assert "cannot write the metrics textfile" in result.stderr


@pytest.mark.parametrize("current", list(Verdict))
def test_every_verdict_is_a_metric_label_value(tmp_path: Path, current: Verdict) -> None:
    """The verdict list comes from the one Verdict enum (issue 20): the gravest verdict,
    `tampered`, and any added later, read 1 when current, every other value 0."""
    populate(tmp_path, verify_outcome=current.value)
    found = metrics(tmp_path)
    labels = {lab["verdict"]: v for lab, v in found["sbtc_ops_last_verify_verdict"]}
    assert set(labels) == {v.value for v in Verdict}
    assert labels == {v.value: float(v == current) for v in Verdict}


@pytest.mark.parametrize("verdict", list(Verdict))
def test_every_verify_verdict_has_its_metric_value(tmp_path: Path, verdict: Verdict) -> None:
    """The verdict gauge lists every member of the one Verdict enum (one was lost once)."""
    populate(tmp_path, verify_outcome="ok" if verdict == Verdict.MATCH else verdict.value)
    found = metrics(tmp_path)
    exported = {labels["verdict"]: v for labels, v in found["sbtc_ops_last_verify_verdict"]}
    assert set(exported) == {member.value for member in Verdict}
    assert {name for name, v in exported.items() if v == 1} == {verdict.value}
