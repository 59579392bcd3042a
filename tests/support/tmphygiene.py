"""The test run leaves nothing in /tmp: a private basetemp removed at the end, and a check.

Registered through `pytest_plugins` in tests/conftest.py.

- Unless `--basetemp` is given, the run's `tmp_path` directories live in one private
  `sbtc-ops-pytest-*` directory made for this run (not the shared `pytest-of-<user>`, which
  pytest keeps for three runs and which other runs on the host use too). It is removed when the
  run ends; set SBTC_OPS_KEEP_TEST_TMP=1 to keep it for a post-mortem (its path is printed).
- At the end, entries that appeared directly in the temporary directory during the run and are
  still there are listed in the summary. Other processes on the host (other test runs, tools)
  create files there too, so only names this suite's fixtures and programs use are counted
  (`LEFTOVER_PREFIXES`), and they fail the run only with SBTC_OPS_STRICT_TMP=1 (a CI job or a
  host running nothing else); otherwise they are a warning.
- Under pytest-xdist (`-n N`, scripts/test.sh) the workers' basetemps are directories of the
  controller's (`<basetemp>/gw0`…), removed with it, and only the controller looks for
  leftovers: it took its list before any worker started and looks again after every worker
  ended (their session fixtures torn down), so an entry any worker leaked is caught and a
  worker's live servers never count against another worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

KEEP_ENV = "SBTC_OPS_KEEP_TEST_TMP"
STRICT_ENV = "SBTC_OPS_STRICT_TMP"
BASETEMP_PREFIX = "sbtc-ops-pytest-"
# Names the suite (fixtures, sbtc-ops, PostgreSQL, weed, pytest) creates in the temp dir.
LEFTOVER_PREFIXES = ("sbtc-", "seaweedfs-", "weed.", "pytest-of-", "chromium-")

_ours = pytest.StashKey[Path]()
_before = pytest.StashKey[set[str]]()
_leftovers = pytest.StashKey[list[str]]()


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def suite_entries(root: Path) -> set[str]:
    """The names in `root` that this suite could have created."""
    try:
        return {name for name in os.listdir(root) if name.startswith(LEFTOVER_PREFIXES)}
    except OSError:
        return set()


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    config.stash[_before] = suite_entries(temp_root())
    if config.option.basetemp is None:
        ours = Path(tempfile.mkdtemp(prefix=BASETEMP_PREFIX))
        config.stash[_ours] = ours
        config.option.basetemp = str(ours)


def pytest_unconfigure(config: pytest.Config) -> None:
    ours = config.stash.get(_ours, None)
    if ours is None:
        return
    if os.environ.get(KEEP_ENV):
        print(f"\ntest temporary files kept in {ours} ({KEEP_ENV} is set)")
        return
    shutil.rmtree(ours, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after every session fixture (servers, sockets) is gone
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if is_xdist_worker(config):
        return  # the controller checks once every worker is done (see the module's doc)
    ours = config.stash.get(_ours, None)
    before = config.stash.get(_before, set())
    after = suite_entries(temp_root())
    leftovers = sorted(name for name in after - before if ours is None or name != ours.name)
    config.stash[_leftovers] = leftovers
    if leftovers and os.environ.get(STRICT_ENV):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    leftovers = terminalreporter.config.stash.get(_leftovers, [])
    if not leftovers:
        return
    verdict = "error" if os.environ.get(STRICT_ENV) else "warning"
    terminalreporter.write_line(
        f"{verdict}: new in {temp_root()} since the run started (this run's, or another "
        f"process's): {', '.join(leftovers)}",
        yellow=verdict == "warning",
        red=verdict == "error",
    )
