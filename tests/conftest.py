"""Shared fixtures. Area-specific fixtures live in tests/support/ and tests/fakes/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cli import CliResult, clean_env, run_cli

# The fixtures of these modules are defined once for the whole run, so a session fixture (a
# PostgreSQL or S3 server) really starts once: imported into test modules instead, pytest
# would hold one definition, and start one server, per importing module.
pytest_plugins = [
    "tests.support.pg",
    "tests.support.backup",
    "tests.support.s3",
    "tests.support.tmphygiene",
    "tests.support.docker_lab",
]


@pytest.fixture(scope="module", autouse=True)
def forget_registered_secrets() -> Iterator[None]:
    """Each test file starts with sbtc-ops' process-wide secret registry (redact.register)
    as empty as the first one did, whatever ran before it in this process: under
    pytest-xdist a worker runs an arbitrary subset of the files, and what an in-process test
    registered (an audit test adds hundreds) changes how much every later scrub costs, and
    what it hides, in the files after it on that worker."""
    yield
    from sbtc_ops import redact

    redact.forget_all()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory: no ./sbtc-ops.toml is picked up by accident."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def cli(workdir: Path) -> Callable[..., CliResult]:
    """Run `sbtc-ops ARGS…` as a real process in `workdir` with a private state dir."""

    def _run(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> CliResult:
        full_env = clean_env(workdir / "state", env)
        return run_cli(*args, cwd=workdir, env=full_env, **kwargs)  # type: ignore[arg-type]

    return _run
