"""Headless Chromium for the tests that open our HTML (the status page, the audit and drill
reports) in a real browser: one command line, one skip when it is not installed, and a wait
until no Chromium process of the run's profile is left."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.serve import processes_with

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (Debian: chromium)"
)


def chromium(profile: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with its own profile directory (`profile`, which names its
    processes) and `args`; return once none of its processes is left (or 10 s passed: the
    caller asserts on that)."""
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        deadline = time.monotonic() + 10
        while processes_with(str(profile)) and time.monotonic() < deadline:
            time.sleep(0.1)


def dump_dom(url: str, profile: Path, *, timeout: float = 60) -> str:
    """The DOM Chromium builds from `url` (after scripts ran), asserting it loaded."""
    done = chromium(profile, "--dump-dom", url, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
