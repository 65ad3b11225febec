"""Progress bars for long loops (rich), silenced with CLUSTERBENCH_PROGRESS=0."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

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


def progress(items: Iterable[T], description: str, total_work: int | None = None) -> Iterator[T]:
    """Iterate `items` with a rich bar; `total_work` only labels the task size."""
    items = list(items) if not hasattr(items, "__len__") else items
    if not enabled() or len(items) <= 1:  # type: ignore[arg-type]
        yield from items
        return
    label = description if total_work is None else f"{description} ({total_work:,})"
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        yield from bar.track(items, description=label)
