"""One instance of an expensive test resource per pytest process, however many modules ask.

A session-scoped fixture imported into several test modules is set up once *per module*
(pytest creates one fixture definition per module that holds it), so a server fixture
imported by four modules starts four servers. `shared_resource` makes those fixture
instances share one resource, started by the first and stopped by the last teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_resources: dict[str, list[Any]] = {}  # key → [resource, number of users]


@contextmanager
def shared_resource(key: str, start: Callable[[], T], stop: Callable[[T], None]) -> Iterator[T]:
    entry = _resources.get(key)
    if entry is None:
        entry = _resources[key] = [start(), 0]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _resources[key]
            stop(entry[0])
