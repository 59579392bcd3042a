"""The hash lock, the SBOM and the installation self-check (issue: an install a security
review can approve).

- pyproject.toml, the runtime lock, the test lock and the SBOM agree (regenerate them all with
  scripts/lock.sh; this file fails until you do);
- a fresh venv installs from the runtime lock with `--require-hashes` and then reports itself
  as exactly the locked set (`sbtc-ops version --json`, audit REL-006);
- a package installed outside the lock, and a stray module, are flagged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from sbtc_ops.install import lock_digest, normalise, parse_pins

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "src" / "sbtc_ops" / "lock" / "runtime.lock"
TEST_LOCK = ROOT / "requirements" / "test.lock"
BUILD_IN = ROOT / "requirements" / "build.in"
SBOM = ROOT / "sbom" / "sbtc-ops.cdx.json"


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def _unsatisfied(requirements: list[Requirement], pins: dict[str, str]) -> list[str]:
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = pins.get(normalise(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} but the lock pins {pinned}")
    return problems


def test_runtime_lock_satisfies_pyproject_and_build_requirements() -> None:
    pins = parse_pins(RUNTIME_LOCK.read_text())
    project = _project()
    wanted = _requirements(list(project["dependencies"]))  # type: ignore[call-overload]
    wanted += _requirements(BUILD_IN.read_text().splitlines())
    assert _unsatisfied(wanted, pins) == [], "run scripts/lock.sh"


def test_test_lock_has_the_runtime_pins_and_the_test_tools() -> None:
    runtime, test = parse_pins(RUNTIME_LOCK.read_text()), parse_pins(TEST_LOCK.read_text())
    assert {n: test.get(n) for n in runtime} == runtime, "the test lock drifted from runtime"
    extras = _requirements(list(_project()["optional-dependencies"]["test"]))  # type: ignore[index]
    assert _unsatisfied(extras, test) == [], "run scripts/lock.sh"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK], ids=["runtime", "test"])
def test_every_pin_carries_hashes(lock: Path) -> None:
    blocks = _pin_blocks(lock.read_text())
    assert len(blocks) == len(parse_pins(lock.read_text())) > 10
    for block in blocks:
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"


def _pins_for_this_platform(lock: Path) -> dict[str, str]:
    """The pins whose environment marker holds here (a universal lock also pins, e.g.,
    Windows-only packages)."""
    pins = {}
    for block in _pin_blocks(lock.read_text()):
        requirement = Requirement(block.splitlines()[0].rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate():
            pins[normalise(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def _pin_blocks(text: str) -> list[str]:
    blocks: list[str] = []
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            blocks.append(line)
        elif blocks and line.strip().startswith("--hash"):
            blocks[-1] += "\n" + line
    return blocks


def test_sbom_lists_exactly_the_locked_set() -> None:
    bom = json.loads(SBOM.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    components = {normalise(c["name"]): c["version"] for c in bom["components"]}
    components.pop("pip", None)  # the venv's installer, not a dependency
    assert components == _pins_for_this_platform(RUNTIME_LOCK), "run scripts/lock.sh"
    assert bom["metadata"]["component"]["name"] == "sbtc-ops"
    assert "pypi.org" not in SBOM.read_text()  # index links are dropped: purls name packages


# -- a real install from the lock -------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_venv() -> Iterator[Path]:
    """A fresh venv: the runtime lock with --require-hashes, then sbtc-ops with --no-deps."""
    venv = Path(tempfile.mkdtemp(prefix="sbtc-ops-lock-venv-", dir="/var/tmp"))
    source = Path(tempfile.mkdtemp(prefix="sbtc-ops-lock-src-", dir="/var/tmp"))
    try:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, "--require-hashes", "-r", str(RUNTIME_LOCK)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 and "Could not find a version" in done.stderr:
            pytest.skip(f"no package index reachable: {done.stderr.strip()[-300:]}")
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [*pip, "--no-deps", "--no-build-isolation", "."],
            cwd=source,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        yield venv
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)


def _version_doc(venv: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(venv / "bin" / "sbtc-ops"), "version", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_fresh_venv_from_the_lock_is_exactly_the_locked_set(locked_venv: Path) -> None:
    doc = _version_doc(locked_venv)
    env = doc["environment"]
    assert isinstance(env, dict)
    assert env["exact"] is True, env
    assert env["development_checkout"] is False
    assert doc["lock_sha256"] == lock_digest()


@pytest.mark.slow
def test_self_check_flags_packages_and_modules_outside_the_lock(
    locked_venv: Path, tmp_path: Path
) -> None:
    project = tmp_path / "intruder"
    (project / "intruder").mkdir(parents=True)
    (project / "intruder" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "intruder"\nversion = "1.0"\n'
    )
    pip = [str(locked_venv / "bin" / "pip"), "install", "-q", "--no-index"]
    subprocess.run([*pip, "--no-build-isolation", str(project)], check=True, capture_output=True)
    site = Path(sysconfig.get_paths(vars={"base": str(locked_venv)})["purelib"])
    stray = site / "planted.py"
    stray.write_text("print('imported')\n")
    try:
        env = _version_doc(locked_venv)["environment"]
        assert isinstance(env, dict)
        assert env["exact"] is False
        assert env["not_locked"] == ["intruder 1.0"]
        assert env["stray"] == [str(stray)]
    finally:
        stray.unlink()
        subprocess.run(
            [str(locked_venv / "bin" / "pip"), "uninstall", "-q", "-y", "intruder"], check=True
        )
