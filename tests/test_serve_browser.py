"""The status page in headless Chromium: it loads, shows the verdicts and the chart; a
screenshot is saved under test-artifacts/. Chromium is gone afterwards."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.browser import chromium, dump_dom, needs_chromium
from tests.support.serve import NO_JOBS, populate, processes_with, running_daemon, write_config

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [pytest.mark.timeout(120), needs_chromium]


def test_status_page_renders_verdicts_and_chart_in_chromium(tmp_path: Path) -> None:
    state = tmp_path / "state"
    populate(state, now=time.time())
    config = write_config(tmp_path / "sbtc-ops.toml", {"serve": NO_JOBS})
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "serve-status-page.png"
    screenshot.unlink(missing_ok=True)
    with running_daemon(config, state) as daemon:
        html = dump_dom(daemon.url + "/", profile)
        shot = chromium(
            profile, f"--screenshot={screenshot}", "--window-size=1280,1700", daemon.url + "/"
        )
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert daemon.terminate() == 0
    overall = re.search(r'id="overall" data-verdict="(\w+)"', html)
    assert overall is not None and overall.group(1) == "red"  # a critical audit finding
    cards = dict(re.findall(r"<b>([A-Za-z ]+): (OK|ATTENTION|PROBLEM)</b>", html))
    assert cards == {
        "Backups": "OK",
        "Verification": "OK",
        "Aggregate key": "OK",
        "Chain endpoints": "ATTENTION",
        "Audit": "PROBLEM",
        "Jobs": "ATTENTION",  # the chain-check's last run: problem, with its reason
    }
    chart = re.search(r'<svg id="backup-chart".*?</svg>', html, re.S)
    assert chart is not None
    points = re.search(r'id="size-line"[^>]*points="([^"]+)"', chart.group(0))
    assert points is not None and len(points.group(1).split()) == 7
    assert "20260101T060000Z" in html  # the latest backups table
    assert "ACC-001" in html  # the open audit finding
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
    assert not processes_with(str(profile)), "chromium outlived its run"
