"""Building blocks of the daemon's Prometheus series: one gauge that is absent until a figure
exists, and one-hot state sets (one series per possible state, 1 for the current one)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

PREFIX = "sbtc_ops"


def number(value: Any) -> float | None:
    """`value` as a sample, or None for anything that is not a number (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def gauge(name: str, doc: str, value: Any) -> Iterator[Metric]:
    """`sbtc_ops_<name>`, absent unless `value` is a number: an alert never fires on a figure
    nobody read."""
    sample = number(value)
    if sample is not None:
        family = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
        family.add_metric([], sample)
        yield family


def state_set(name: str, doc: str, label: str, states: Iterable[str], current: object) -> Metric:
    """`sbtc_ops_<name>{<label>=state}` for every state: 1 for `current`, 0 for the others."""
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=[label])
    for state in states:
        family.add_metric([state], 1.0 if state == current else 0.0)
    return family
