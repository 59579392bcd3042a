"""The settings model as documentation: a commented sbtc-ops.toml sample and a reference.

Both are written from `config.Settings` (each field's description, example and default), so
they cannot drift from what `load_settings` accepts: `sbtc-ops config sample` prints the TOML,
`config sample --json` the reference.

Every setting is written commented out, as `#key = default  # default` or, without a fixed
default (None, or host-dependent: COMPUTED_DEFAULT), `#key = example  # example`. Commented,
because a value written in sbtc-ops.toml would hide what the signer's configuration says (the
file layer is above it): the sample as it is loads back to the defaults, and uncommenting a
line sets exactly that setting.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sbtc_ops.config import Settings, is_computed_default

WIDTH = 96

HEADER = """\
# sbtc-ops.toml: every setting, its description, an example and its default.
# Written by `sbtc-ops config sample` from the settings model; check a file with
# `sbtc-ops config check`. Looked up at --config, $SBTC_OPS_CONFIG, ./sbtc-ops.toml,
# /etc/sbtc-ops/sbtc-ops.toml. Precedence, highest first: command-line flags >
# SBTC_OPS_<SECTION>__<KEY> environment > this file > the signer's configuration (its
# signer-config.toml under its SIGNER_* variables) > a discovered deployment (only with no
# configuration) > network preset > defaults; every layer: docs/configuration.md. Every
# setting is commented out with its default ("# default") or, if it has none, an example
# ("# example"): uncomment and edit only what you need, so the values sbtc-ops reads from the
# signer's configuration are not hidden by this file.
"""


@dataclass(frozen=True)
class SettingDoc:
    """One setting (a leaf) or section (a nested model) of the settings model."""

    key: str  # dotted: "backup.retention.keep_daily"
    field: FieldInfo
    section: type[BaseModel] | None  # the model of a section, None for a leaf

    @property
    def description(self) -> str:
        return self.field.description or ""

    @property
    def example(self) -> Any:
        return self.field.examples[0] if self.field.examples else None

    @property
    def has_default(self) -> bool:
        """Whether the sample writes a value: a fixed, non-None default."""
        return not is_computed_default(self.field) and self.default is not None

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    def to_json(self) -> dict[str, Any]:
        if self.section is not None:
            return {"key": self.key, "section": True, "description": self.description}
        return {
            "key": self.key,
            "description": self.description,
            "default": _plain(self.default),
            "example": _plain(self.example),
        }


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def walk(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[SettingDoc]:
    """Every setting and section, depth first, leaves of a model before its sections (the
    order TOML needs: a table's keys come before its sub-tables)."""
    fields = [(name, field) for name, field in model.model_fields.items() if not field.exclude]
    for name, field in fields:
        if section_model(field) is None:
            yield SettingDoc(f"{prefix}{name}", field, None)
    for name, field in fields:
        nested = section_model(field)
        if nested is not None:
            yield SettingDoc(f"{prefix}{name}", field, nested)
            yield from walk(nested, f"{prefix}{name}.")


def reference() -> dict[str, Any]:
    """`config sample --json`: every section and setting with description, default, example."""
    return {"ok": True, "settings": [doc.to_json() for doc in walk()]}


def sample_toml() -> str:
    """A commented sbtc-ops.toml holding every setting; loads back to the defaults."""
    out = [HEADER]
    for doc in walk():
        if doc.section is not None:
            out.append("")
            out.extend(_comment(doc.description))
            out.append(f"[{doc.key}]")
            continue
        out.extend(_comment(doc.description))
        out.append(_setting_line(doc))
    return "\n".join(out) + "\n"


def _setting_line(doc: SettingDoc) -> str:
    name = doc.key.rpartition(".")[2]
    if not doc.has_default:
        return f"#{name} = {toml_value(doc.example)}  # example"
    line = f"#{name} = {toml_value(doc.default)}  # default"
    hint = f", e.g. {toml_value(doc.example)}"
    return line + hint if len(line) + len(hint) <= WIDTH else line


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent="# ", subsequent_indent="# ")


def toml_value(value: Any) -> str:
    """A TOML literal for the plain values settings hold (bool, number, text, path, list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
