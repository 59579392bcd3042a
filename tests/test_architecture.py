"""docs/architecture.md's layer diagram and the import-linter contracts that enforce it
(pyproject.toml, run by `lint-imports` in scripts/test.sh) name the same layers in the same
order, and every package and module of src/sbtc_ops sits in one of them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sbtc_ops"


def contract_layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in layers]


def diagram() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def first_mention(name: str, text: str) -> int:
    found = re.search(rf"(?<![\w/.]){re.escape(name)}(/|\.py\b)", text)
    assert found, f"docs/architecture.md's layer diagram does not name {name}"
    return found.start()


def test_the_diagram_lists_the_contracts_layers_in_order() -> None:
    text = diagram()
    positions = [[first_mention(name, text) for name in layer] for layer in contract_layers()]
    for upper, lower in zip(positions, positions[1:], strict=False):
        assert max(upper) < min(lower), (upper, lower)


def test_every_module_of_the_package_has_a_layer() -> None:
    placed = {name for layer in contract_layers() for name in layer}
    top_level = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert top_level - placed == set(), "give these a layer in pyproject.toml and the diagram"
