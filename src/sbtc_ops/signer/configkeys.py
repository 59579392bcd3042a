"""The signer's configuration as a set of dotted keys, judged against a release's known keys.

The signer reads ``signer-config.toml`` and then ``SIGNER_<SECTION>__<KEY>`` environment
variables (env wins), and silently ignores keys no struct reads (no ``deny_unknown_fields`` in
``signer/src/config/mod.rs``). So a key removed by an upgrade, or misspelt, does nothing and
nobody is told: these helpers name such keys. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sbtc_ops.signer.knowledge import Knowledge


@dataclass(frozen=True)
class KeyReport:
    """Keys of a configuration judged against one release."""

    version: str
    removed: dict[str, str] = field(default_factory=dict)  # key -> release that removed it
    unknown: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    not_yet: dict[str, str] = field(default_factory=dict)  # key -> release that adds it

    @property
    def ignored(self) -> list[str]:
        return sorted([*self.removed, *self.not_yet, *self.unknown])


def judge_keys(present: Iterable[str], version: str, knowledge: Knowledge) -> KeyReport:
    """Which present keys the release ignores (removed, not yet added, never known) and which
    required keys are absent. An empty table (``[signer.p2p]`` with no key) is not flagged."""
    keys = set(present)
    known = knowledge.keys_at(version)
    removed_map = knowledge.removed_by(version)
    removed: dict[str, str] = {}
    unknown: list[str] = []
    not_yet: dict[str, str] = {}
    for key in sorted(keys):
        if key in known or any(k.startswith(f"{key}.") for k in known):
            continue
        if key in removed_map:
            removed[key] = removed_map[key]
        elif (added := knowledge.added_in(key)) is not None:
            not_yet[key] = added
        else:
            unknown.append(key)
    missing = sorted(knowledge.required_at(version) - keys)
    return KeyReport(version, removed, unknown, missing, not_yet)
