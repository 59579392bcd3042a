"""What sbtc-ops knows of each sBTC signer release, loaded from ``releases.toml`` beside this file.

The table is data so that a new release is one edit in one place: its migrations, the config
keys it adds or removes, and the fixed incidents worth a check before upgrading. Versions are
written without the ``v`` (``1.3.3``); ``HEAD`` is the newest known unreleased commit and
sorts after every release.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from sbtc_ops.errors import SbtcOpsError

HEAD = "HEAD"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
# signer-v1.3.3, signer-v1.3.3-debian, v1.3.3, 1.3.3 — inside an image reference or alone.
_IN_TEXT = re.compile(r"(?:^|[:/@\s])(?:signer-)?v?(\d+\.\d+\.\d+)(?:-debian)?(?:$|[@\s])")


class KnowledgeError(SbtcOpsError):
    """releases.toml is malformed (a packaging or editing mistake, not user input)."""


@dataclass(frozen=True)
class Release:
    version: str
    date: str
    commit: str
    source: str
    migrations_added: tuple[str, ...] = ()
    keys_added: tuple[str, ...] = ()
    keys_removed: tuple[str, ...] = ()
    required_added: tuple[str, ...] = ()
    required_removed: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return self.version if self.version == HEAD else f"v{self.version}"


@dataclass(frozen=True)
class MigrationEffect:
    effect: str  # drops | deletes | rewrites
    detail: str
    source: str

    @property
    def destroys_data(self) -> bool:
        return self.effect in ("deletes", "rewrites")


@dataclass(frozen=True)
class Incident:
    id: str
    fixed_in: str
    title: str
    source: str


@dataclass(frozen=True)
class Knowledge:
    repository: str
    image: str
    image_tag_prefix: str
    releases: tuple[Release, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    migration_effects: dict[str, MigrationEffect] = field(default_factory=dict)
    incidents: tuple[Incident, ...] = ()

    # -- looking releases up ------------------------------------------------------------------

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.releases)

    @property
    def newest_release(self) -> Release:
        """The newest tagged release (HEAD excluded)."""
        return [r for r in self.releases if r.version != HEAD][-1]

    def index(self, version: str) -> int:
        try:
            return self.versions.index(version)
        except ValueError:
            known = ", ".join(r.tag for r in self.releases)
            raise KnowledgeError(
                f"signer version {version!r} is not in sbtc-ops' release table ({known})"
            ) from None

    def release(self, version: str) -> Release:
        return self.releases[self.index(version)]

    def by_commit(self, revision: str) -> Release | None:
        """The release built from a git revision (build_info's `revision`, full or short)."""
        wanted = revision.strip().lower()
        if len(wanted) < 7 or not re.fullmatch(r"[0-9a-f]+", wanted):
            return None
        return next((r for r in self.releases if r.commit.startswith(wanted)), None)

    # -- cumulative views -----------------------------------------------------------------

    def _upto(self, version: str) -> tuple[Release, ...]:
        return self.releases[: self.index(version) + 1]

    def migrations_at(self, version: str) -> tuple[str, ...]:
        """Every migration an image of this version has applied, oldest first."""
        return tuple(m for r in self._upto(version) for m in r.migrations_added)

    def keys_at(self, version: str) -> frozenset[str]:
        keys: set[str] = set()
        for release in self._upto(version):
            keys |= set(release.keys_added)
            keys -= set(release.keys_removed)
        return frozenset(keys)

    def required_at(self, version: str) -> frozenset[str]:
        keys: set[str] = set()
        for release in self._upto(version):
            keys |= set(release.required_added)
            keys -= set(release.required_removed)
        return frozenset(keys)

    def removed_by(self, version: str) -> dict[str, str]:
        """Keys removed at or before this version (and not re-added): key -> removing release."""
        removed: dict[str, str] = {}
        for release in self._upto(version):
            for key in release.keys_added:
                removed.pop(key, None)
            for key in release.keys_removed:
                removed[key] = release.tag
        return removed

    def added_in(self, key: str) -> str | None:
        return next((r.tag for r in self.releases if key in r.keys_added), None)

    def incidents_fixed_between(self, older: str, newer: str) -> tuple[Incident, ...]:
        """Incidents whose fix is in `newer` but not in `older`."""
        low, high = self.index(older), self.index(newer)
        return tuple(i for i in self.incidents if low < self.index(i.fixed_in) <= high)

    def open_incidents(self, version: str) -> tuple[Incident, ...]:
        """Incidents not fixed in this version (fixed later, or only on HEAD)."""
        here = self.index(version)
        return tuple(i for i in self.incidents if self.index(i.fixed_in) > here)


def normalise_version(text: str) -> str | None:
    """`v1.3.3`, `1.3.3`, `signer-v1.3.3`, an image reference with that tag, or HEAD."""
    stripped = text.strip()
    if stripped.upper() == HEAD:
        return HEAD
    match = _VERSION.match(stripped)
    if match:
        return ".".join(match.groups())
    found = _IN_TEXT.search(stripped)
    return found.group(1) if found else None


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KnowledgeError(f"releases.toml {where}: {key} must be a list of strings")
    return tuple(value)


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise KnowledgeError(f"releases.toml {where}: {key} must be a non-empty string")
    return value


def _release(doc: dict[str, Any]) -> Release:
    where = f"release {doc.get('version')!r}"
    return Release(
        version=_text(doc, "version", where),
        date=_text(doc, "date", where),
        commit=_text(doc, "commit", where),
        source=_text(doc, "source", where),
        migrations_added=_strings(doc, "migrations_added", where),
        keys_added=_strings(doc, "keys_added", where),
        keys_removed=_strings(doc, "keys_removed", where),
        required_added=_strings(doc, "required_added", where),
        required_removed=_strings(doc, "required_removed", where),
    )


def parse(text: str) -> Knowledge:
    """Build the table from TOML text; KnowledgeError for a malformed table."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"releases.toml is not valid TOML: {exc}") from None
    if doc.get("schema") != 1:
        raise KnowledgeError("releases.toml: unsupported schema (expected 1)")
    effects = {
        name: MigrationEffect(
            _text(v, "effect", name), _text(v, "detail", name), _text(v, "source", name)
        )
        for name, v in dict(doc.get("migration_effects", {})).items()
    }
    incidents = tuple(
        Incident(
            _text(i, "id", "incident"),
            _text(i, "fixed_in", "incident"),
            _text(i, "title", "incident"),
            _text(i, "source", "incident"),
        )
        for i in doc.get("incident", [])
    )
    return Knowledge(
        repository=_text(doc, "repository", "top level"),
        image=_text(doc, "image", "top level"),
        image_tag_prefix=_text(doc, "image_tag_prefix", "top level"),
        releases=tuple(_release(r) for r in doc.get("release", [])),
        defaults=dict(doc.get("defaults", {})),
        migration_effects=effects,
        incidents=incidents,
    )


@lru_cache(maxsize=1)
def load() -> Knowledge:
    """The packaged table (read once per process)."""
    text = resources.files("sbtc_ops.signer").joinpath("releases.toml").read_text("utf-8")
    return parse(text)
