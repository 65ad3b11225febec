"""`k_estimation=sweep`: the method itself fitted at every K of `grid`, each fit's train
assignments scored by one label-free score (`evaluation/label_free.py`), the best K kept.

The most faithful estimator (it scores the partitions the method really makes) and the most
expensive: len(grid) full fits before the run's own. Each candidate fits in
`<run dir>/k_estimation/k<K>/` (its checkpoints, so a killed sweep resumes per candidate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from clusterbench.core.errors import ConfigError
from clusterbench.evaluation.label_free import (
    HEAD_SCORES,
    cluster_sizes,
    generalisation,
    knn_consistency,
    sampled_neighbours,
    silhouette,
)
from clusterbench.evaluation.predictions import Assigned
from clusterbench.methods.k_estimation.search import KEstimate, choose
from clusterbench.methods.task import ClusteringTask


class Sweep:
    name = "sweep"

    def __init__(self, grid: list[int] | None = None, score: str = "silhouette",
                 sample: int = 5000, knn: int = 10, tolerance: float = 0.0) -> None:  # fmt: skip
        self.grid = sorted({int(k) for k in (grid or [])})
        if not self.grid:
            raise ConfigError("k_estimation.grid is empty: list the K values to sweep, e.g. "
                              "k_estimation.grid=[5,10,20,50]")  # fmt: skip
        if self.grid[0] < 2:
            raise ConfigError(f"k_estimation.grid={self.grid}: every K must be >= 2")
        if score not in HEAD_SCORES:
            raise ConfigError(f"k_estimation.score={score!r}: expected one of {HEAD_SCORES}")
        self.score, self.sample, self.knn, self.tolerance = score, sample, knn, tolerance

    def minimum_rows(self) -> int:
        return 2 * self.grid[-1]

    def estimate(self, task: ClusteringTask, make_method: Callable[[int], object]) -> KEstimate:
        rows = task.view.train
        if len(rows) < self.minimum_rows():
            raise ConfigError(
                f"k_estimation=sweep needs at least {self.minimum_rows()} rows (two per cluster "
                f"at K={self.grid[-1]}); the view has {len(rows)}"
            )
        queries, table = sampled_neighbours(rows, self.knn, self.sample, task.seed)
        scores, fits = [], {}
        for k in self.grid:
            sub = dataclasses.replace(task, num_clusters=k, info={}, loggers=[],
                                      run_dir=task.run_dir / "k_estimation" / f"k{k}")  # fmt: skip
            sub.run_dir.mkdir(parents=True, exist_ok=True)
            method = make_method(k)
            method.fit_predict(sub)
            top1 = _train_top1(method, rows)
            values = {
                "size_balance": cluster_sizes(np.bincount(top1, minlength=k))["normalized_entropy"],
                "knn_consistency": knn_consistency(top1, table, queries)["value"],
                "silhouette": silhouette(rows, top1, self.sample, task.seed)["value"],
                "generalisation": generalisation(rows, top1, k, self.sample, 5, task.seed)["value"],
            }
            scores.append(values[self.score])
            fits[k] = {"scores": values, **sub.info}
        k = choose(self.grid, scores, self.tolerance)
        return KEstimate(k=k, criterion=self.score, candidates=list(self.grid), scores=scores,
                         estimator=self.name,
                         details={"fits": {str(c): fits[c] for c in self.grid}})  # fmt: skip


def _train_top1(method, rows) -> np.ndarray:
    """(N,) the fitted method's cluster of every train row."""
    parts: list[Assigned] = list(method.train_assigned() if hasattr(method, "train_assigned")
                                 else method.assign(rows))  # fmt: skip
    return np.concatenate([p.topk[:, 0] for p in parts])
