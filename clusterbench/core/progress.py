"""Progress bars for long loops (rich), silenced with CLUSTERBENCH_PROGRESS=0."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("CLUSTERBENCH_PROGRESS", "1") != "0"


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate lazily with a rich bar; `total` is the number of steps when `items` has no len."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled() or (total is not None and total <= 1):
        yield from items
        return
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        yield from bar.track(items, total=total, description=description)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for one long call that reports no progress of its own (e.g. faiss k-means)."""
    if not enabled():
        yield
        return
    with Console().status(message):
        yield
