"""Progress, one home: rich bars for long loops (`progress`, `status`), and Lightning bars that
show what a user waits for.

Loop bars are silenced with CLUSTERBENCH_PROGRESS=0. Lightning's bar counts the steps of one
epoch, so a 50-epoch run that takes five hours on a laptop looks like a few minutes per bar:
`RunProgressBar` adds the remaining time of the whole fit; `RunTimeEstimate` logs it after the
first epoch (and the plan at the start), so it also reaches job logs where no bar is drawn.
`ExtractionProgressBar` counts images per second instead of batches.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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


log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """'4 h 57 min', '6 min 05 s', '12 s': coarse enough to read at a glance."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


class RunClock:
    """The fit's remaining time from the rate of the steps done so far.

    The clock starts at the end of the first step this process runs, so that start-up (data
    loading, kNN mining, compilation, a resumed run's earlier steps) does not bias the rate.
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.start_step = 0

    def tick(self, step: int, now: float | None = None) -> None:
        if self.start is None:
            self.start, self.start_step = (time.perf_counter() if now is None else now), step

    def remaining(self, step: int, total: int | float, now: float | None = None) -> float | None:
        """Seconds left for `total` steps after `step` done; None before the rate is known."""
        if self.start is None or step <= self.start_step or not math.isfinite(total):
            return None
        now = time.perf_counter() if now is None else now
        per_step = (now - self.start) / (step - self.start_step)
        return max(0.0, (total - step) * per_step)


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar plus `run left`, the estimated time to the end of the whole fit."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = RunClock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.tick(trainer.global_step)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        left = self.clock.remaining(trainer.global_step, trainer.estimated_stepping_batches)
        if left is not None:
            items["run left"] = format_duration(left)
        return items


class RunTimeEstimate(Callback):
    """Logs the plan (epochs × steps) at the start and the projected end after epoch one."""

    def __init__(self) -> None:
        self.clock = RunClock()
        self.reported = False

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        total = trainer.estimated_stepping_batches
        if math.isfinite(total):
            log.info(
                "training: %d epochs, %s optimiser steps in all",
                trainer.max_epochs,
                f"{int(total):,}",
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.tick(trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.reported or trainer.sanity_checking:
            return
        left = self.clock.remaining(trainer.global_step, trainer.estimated_stepping_batches)
        if left is None:
            return
        self.reported = True
        epochs_left = (trainer.max_epochs or 0) - trainer.current_epoch - 1
        log.info(
            "epoch %d of %d done; %d more epoch%s take about %s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            epochs_left,
            "" if epochs_left == 1 else "s",
            format_duration(left),
        )


class ImagesPerSecond(ProgressColumn):
    """Rich column: the bar's batches/s as images/s."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed * self.batch_size:,.0f} images/s")


class ExtractionProgressBar(RichProgressBar):
    """Lightning's rich bar, counting images per second instead of batches."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    @property
    def predict_description(self) -> str:
        return "Extracting"

    def configure_columns(self, trainer) -> list:
        return super().configure_columns(trainer)[:-1] + [ImagesPerSecond(self.batch_size)]
