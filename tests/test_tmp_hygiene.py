"""The suite leaves nothing in the temporary directory (tests/support/tmphygiene.py).

Each case runs an inner pytest with its own TMPDIR, so what it leaves is attributable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASE = "tests/support/tmp_probe_case.py"


def _inner_pytest(tmpdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "TMPDIR": str(tmpdir), **env}
    full_env.pop("SBTC_OPS_KEEP_TEST_TMP", None)
    full_env.pop("PYTEST_XDIST_WORKER", None)  # an inner run of a worker is a run of its own
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, CASE],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_leaves_its_temporary_directory_empty(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = _inner_pytest(tmpdir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(os.listdir(tmpdir)) == []  # no pytest-of-<user>, no basetemp


def test_a_leftover_is_named_and_fails_a_strict_run(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = _inner_pytest(tmpdir, PROBE_LEAK="1", SBTC_OPS_STRICT_TMP="1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "sbtc-leak-" in run.stdout
    leftovers = os.listdir(tmpdir)
    assert len(leftovers) == 1 and leftovers[0].startswith("sbtc-leak-")


def test_a_leftover_only_warns_by_default(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = _inner_pytest(tmpdir, PROBE_LEAK="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning: new in" in run.stdout and "sbtc-leak-" in run.stdout


def test_parallel_workers_leave_nothing_and_a_workers_leftover_is_named(tmp_path: Path) -> None:
    """Under pytest-xdist (scripts/test.sh) the workers' temporary files are the run's, and
    an entry one worker leaks is still found (by the controller, after every worker ended)."""
    clean_tmp = tmp_path / "clean"
    clean_tmp.mkdir()
    run = _inner_pytest(clean_tmp, "-n", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(os.listdir(clean_tmp)) == []

    leaky_tmp = tmp_path / "leaky"
    leaky_tmp.mkdir()
    run = _inner_pytest(leaky_tmp, "-n", "2", PROBE_LEAK="1", SBTC_OPS_STRICT_TMP="1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "sbtc-leak-" in run.stdout
    leftovers = os.listdir(leaky_tmp)
    assert len(leftovers) == 1 and leftovers[0].startswith("sbtc-leak-")
