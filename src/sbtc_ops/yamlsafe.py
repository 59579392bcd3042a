"""YAML from files other people write (compose files, vector configs), parsed with bounds.

yaml.safe_load runs no code, but aliases make a DAG that every reader walks as a tree: a
584-byte compose file with an alias tree reached 4.1 GB of RSS in 76 s (issue 21). Here the
document is composed first (aliases are references, composing is linear in the text), then
the size it has once every alias is expanded — nodes and scalar bytes — is computed over the
node graph, each node once, and refused beyond the bounds, as is a recursive alias, before
anything is constructed. The constructed objects keep aliases shared (interpolation must
memoize, see host.compose.interpolate_tree): nobody copies more than the bounds allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from sbtc_ops.errors import SbtcOpsError

# A compose file is a few kB; composing costs time and memory in its size (about 100
# bytes of nodes per byte of YAML), so the cap keeps even a hostile file to a few seconds.
MAX_YAML_BYTES = 256 << 10
_BRACKETS = re.compile(r"[\[\]{}]")
# libyaml when PyYAML has it (faster, and it bounds nesting itself), else the pure-Python one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int = MAX_YAML_BYTES
    # With every alias expanded: a large compose file has a few thousand nodes.
    max_expanded_nodes: int = 100_000
    max_expanded_scalar_bytes: int = 8 << 20
    # [[[[… makes PyYAML's scanner quadratic in the depth (each level is a pending key).
    max_flow_depth: int = 64


DEFAULT_LIMITS = YamlLimits()


class YamlError(SbtcOpsError):
    """Not valid YAML, or larger than the bounds once its aliases are expanded."""


def load_bounded(text: str | bytes, limits: YamlLimits = DEFAULT_LIMITS) -> Any:
    """yaml.safe_load with bounds (YamlError past them, or for invalid YAML)."""
    if len(text) > limits.max_bytes:
        raise YamlError(f"larger than {limits.max_bytes >> 10} KiB")
    _check_flow_depth(text if isinstance(text, str) else text.decode("utf-8", "replace"), limits)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, limits)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise YamlError(f"not valid YAML{line}") from None
    except RecursionError:  # the composer recurses once per nesting level
        raise YamlError("nested too deeply") from None
    finally:
        loader.dispose()


def _check_flow_depth(text: str, limits: YamlLimits) -> None:
    """Refuse [ and { nested deeper than the limit (counted over the whole text, quoted or
    not: a conservative over-estimate, linear)."""
    depth = 0
    for bracket in _BRACKETS.findall(text):
        depth = depth + 1 if bracket in "[{" else max(0, depth - 1)
        if depth > limits.max_flow_depth:
            raise YamlError(
                f"flow collections ([ or {{) nested more than {limits.max_flow_depth} deep"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, limits: YamlLimits) -> None:
    """Size of the document with its aliases expanded, each node of the graph visited once
    (iteratively: no recursion limit to hit); YamlError past the limits or on a cycle."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, scalar bytes)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            nodes, size = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            for child in _children(node):
                child_nodes, child_size = sizes[id(child)]
                nodes, size = nodes + child_nodes, size + child_size
            _within(nodes, size, limits)
            sizes[key] = (nodes, size)
        elif key in open_nodes:
            raise YamlError("an alias refers to a node that contains it (recursive alias)")
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _within(nodes: int, scalar_bytes: int, limits: YamlLimits) -> None:
    if nodes > limits.max_expanded_nodes:
        raise YamlError(
            f"expands (through its aliases) to more than {limits.max_expanded_nodes} nodes: "
            "refusing it"
        )
    if scalar_bytes > limits.max_expanded_scalar_bytes:
        raise YamlError(
            f"expands (through its aliases) to more than "
            f"{limits.max_expanded_scalar_bytes >> 20} MiB of values: refusing it"
        )
