"""ClusteringTask: everything a method receives, so new methods never touch the entry point.

A method is any object with `fit_predict(task) -> Predictions` (built by Hydra from
`conf/method/*.yaml`). It may read neighbours (`neighbours_for(k)`: mined lazily, cached),
log through the run's loggers, build a Lightning Trainer with `make_trainer` (the `trainer`
config group as a partial), and record facts in `info`, which lands in results.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.predictions import Predictions
from clusterbench.neighbours import NeighbourIndex

# What a method's `num_clusters` accepts: K, null (the view's number of classes) or "auto"
# (estimated before the method trains, see methods/k_estimation).
RequestedK = int | Literal["auto"] | None


@dataclass
class ClusteringTask:
    view: BenchmarkView
    num_clusters: int
    seed: int
    device: str
    run_dir: Path
    neighbours: NeighbourIndex | None = None
    loggers: list[Any] = field(default_factory=list)
    make_trainer: Callable[..., Any] | None = None  # lightning.Trainer with the config's settings
    callbacks: list[Any] = field(default_factory=list)  # extra Lightning callbacks
    info: dict = field(default_factory=dict)

    def neighbours_for(self, k: int) -> np.ndarray:
        """(N_train, k) int64 nearest neighbours of the train split, best first, self excluded
        (mined on first use with at least `knn.k` columns, then cached on disk)."""
        if self.neighbours is None:
            raise ValueError("this task has no neighbour index")
        return self.neighbours.table(k)


class ClusteringMethod(Protocol):
    name: str

    def fit_predict(self, task: ClusteringTask) -> Predictions: ...
