"""sbtc-ops' own installation: the hash lock it was meant to be installed from, and whether
the running environment is exactly that set.

The lock (`lock/runtime.lock`, written by scripts/lock.sh with uv, every file's SHA-256)
is what `pip install --require-hashes` installs; its digest identifies the dependency set in
drill attestations and `sbtc-ops version`. `inspect_environment` compares the distributions
installed in sbtc-ops' environment with it, and finds code importable from it that no
distribution installed (stray modules, `.pth` files, a user site directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import site
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

LOCK_NAME = "runtime.lock"
TEST_LOCK = Path("requirements") / "test.lock"  # in a development checkout
# A lock line: `name==version` then an optional marker or line continuation.
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)")
# The installer of the environment itself; a venv always has it, no lock pins it.
INSTALLER = frozenset({"pip"})
SELF = "sbtc-ops"
_NOT_CODE = frozenset({"__pycache__", "README.txt"})


def normalise(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_text() -> bytes:
    return (resources.files("sbtc_ops") / "lock" / LOCK_NAME).read_bytes()


@lru_cache(maxsize=1)
def lock_digest() -> str:
    """SHA-256 of the shipped runtime lock: names the exact dependency set."""
    return hashlib.sha256(lock_text()).hexdigest()


def parse_pins(text: str) -> dict[str, str]:
    """{normalised name: version} of a pip-compile/uv lock (hash lines and comments skipped).
    A universal lock may pin one name twice under exclusive markers: the first pin wins."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins.setdefault(normalise(match.group(1)), match.group(2))
    return pins


def locked_pins() -> dict[str, str]:
    return parse_pins(lock_text().decode())


@dataclass(frozen=True)
class EnvironmentReport:
    """How sbtc-ops' environment compares with its lock."""

    lock_digest: str
    site_dirs: list[str]
    checked: int
    editable: bool
    not_locked: list[str] = field(default_factory=list)  # "name version"
    wrong_version: list[str] = field(default_factory=list)  # "name installed (locked x)"
    stray: list[str] = field(default_factory=list)  # importable, installed by no distribution

    @property
    def exact(self) -> bool:
        return not (self.not_locked or self.wrong_version or self.stray)


def environment_site_dirs() -> list[Path]:
    """The site-packages directories of the running environment (purelib, platlib)."""
    paths = sysconfig.get_paths()
    found: list[Path] = []
    for key in ("purelib", "platlib"):
        path = Path(paths[key])
        if path.is_dir() and path not in found:
            found.append(path)
    return found


def inspect_environment() -> EnvironmentReport:
    """Compare the running environment with the lock. A development checkout installed
    editable (`pip install -e`, as scripts/test.sh does) is compared with its test lock too,
    and its source directory is an expected import path."""
    pins = locked_pins()
    dirs = environment_site_dirs()
    dists = list(metadata.distributions(path=[str(d) for d in dirs]))
    checkout = next((_editable_checkout(d) for d in dists if _name(d) == SELF), None)
    allowed_paths: set[str] = set()
    if checkout is not None:
        allowed_paths.add(str(checkout / "src"))
        test_lock = checkout / TEST_LOCK
        if test_lock.is_file():
            for name, version in parse_pins(test_lock.read_text()).items():
                pins.setdefault(name, version)
    not_locked, wrong = [], []
    for dist in dists:
        name = _name(dist)
        if name == SELF or name in INSTALLER:
            continue
        locked = pins.get(name)
        if locked is None:
            not_locked.append(f"{name} {dist.version}")
        elif locked != dist.version:
            wrong.append(f"{name} {dist.version} (locked {locked})")
    stray = _stray_entries(dirs, dists) + _outside_paths(allowed_paths)
    return EnvironmentReport(
        lock_digest(),
        [str(d) for d in dirs],
        len(dists),
        checkout is not None,
        sorted(not_locked),
        sorted(wrong),
        sorted(stray),
    )


def _name(dist: metadata.Distribution) -> str:
    return normalise(dist.metadata["Name"] or "")


def _editable_checkout(dist: metadata.Distribution) -> Path | None:
    """The project directory of an editable install (PEP 610 direct_url.json), else None."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return None
    if not isinstance(direct, dict) or not (direct.get("dir_info") or {}).get("editable"):
        return None
    url = str(direct.get("url", ""))
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _stray_entries(dirs: list[Path], dists: list[metadata.Distribution]) -> list[str]:
    """Top-level entries of site-packages that no installed distribution's RECORD names."""
    owned: set[str] = set()
    for dist in dists:
        for recorded in dist.files or []:
            owned.add(recorded.parts[0])
    stray = []
    for directory in dirs:
        for entry in directory.iterdir():
            name = entry.name
            if name in owned or name in _NOT_CODE or name.endswith((".dist-info", ".egg-info")):
                continue
            stray.append(str(entry))
    return stray


def _outside_paths(allowed: set[str]) -> list[str]:
    """Import paths the environment would add beyond itself: PYTHONPATH entries and an
    enabled, existing user site directory. (The running process's own sys.path is not the
    installation: a test runner or `python -m` adds its working directory.)"""
    found = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and entry not in allowed:
            found.append(f"PYTHONPATH: {entry}")
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and Path(user_site).is_dir():
        found.append(f"user site: {user_site}")
    return found
