"""Progress on long work (dump, upload, download, restore): bytes and rate, on stderr.

Shown only when stderr is a terminal; otherwise silent, so logs and --json stay clean.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)


def _enabled() -> bool:
    return sys.stderr.isatty()


def _path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(nbytes)`; thread-safe (boto3 calls it from worker threads)."""
    if not _enabled():
        yield lambda _n: None
        return
    lock = threading.Lock()
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)

        def advance(nbytes: int) -> None:
            with lock:
                progress.advance(task, nbytes)

        yield advance


@contextmanager
def watch_growth(description: str, path: Path, interval_s: float = 0.5) -> Iterator[None]:
    """Show the growing size of a file or directory another process is writing."""
    if not _enabled():
        yield
        return
    stop = threading.Event()
    columns = (
        TextColumn("{task.description}", markup=False),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=None)

        def poll() -> None:
            while not stop.wait(interval_s):
                progress.update(task, completed=_path_size(path))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
