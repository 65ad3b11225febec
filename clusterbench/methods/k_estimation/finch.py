"""`k_estimation=finch`: FINCH's hierarchy (`methods/finch.py`), built on the run's own cached
first neighbours, and the level whose partition scores best by the criterion (`level` picks one
by its index instead: 0 is the finest, the granularity knob)."""

from __future__ import annotations

import numpy as np

from clusterbench.core.device import faiss_uses_gpu
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.methods.finch import MIN_ROWS, hierarchy
from clusterbench.methods.k_estimation.criteria import Groups, score
from clusterbench.methods.k_estimation.search import KEstimate, check_bounds, choose
from clusterbench.methods.task import ClusteringTask


class FinchLevels:
    name = "finch"

    def __init__(self, criterion: str = "silhouette", k_min: int = 2, k_max: int | None = None,
                 level: int | None = None, silhouette_sample: int = 10000,
                 tolerance: float = 0.0) -> None:  # fmt: skip
        self.criterion, self.k_min, self.k_max, self.level = criterion, k_min, k_max, level
        self.silhouette_sample, self.tolerance = silhouette_sample, tolerance
        check_bounds(criterion, k_min, k_max, tolerance)

    def minimum_rows(self) -> int:
        return max(MIN_ROWS, 2 * self.k_min)

    def estimate(self, task: ClusteringTask, make_method=None) -> KEstimate:
        rows = task.view.train
        if len(rows) < self.minimum_rows():
            raise ConfigError(
                f"k_estimation=finch needs at least {self.minimum_rows()} rows for "
                f"k_min={self.k_min}; the view has {len(rows)}"
            )
        tree = hierarchy(rows, task.neighbours_for(1)[:, 0], faiss_uses_gpu(task.device))
        sizes = tree.sizes
        k_max = len(rows) if self.k_max is None else int(self.k_max)
        inside = [i for i, s in enumerate(sizes) if self.k_min <= s <= k_max]
        if self.level is not None:
            if not 0 <= int(self.level) < len(sizes):
                raise ConfigError(
                    f"k_estimation.level={self.level}: FINCH found {len(sizes)} levels "
                    f"({sizes} clusters), expected 0..{len(sizes) - 1}"
                )
            inside = [int(self.level)]
        if not inside:
            raise ConfigError(
                f"k_estimation=finch: no FINCH level has between k_min={self.k_min} and "
                f"k_max={k_max} clusters (levels: {sizes}); widen the bounds"
            )
        pick = np.sort(np.random.default_rng(task.seed).permutation(len(rows))[
            : self.silhouette_sample])  # fmt: skip
        sample = l2_normalize_rows(np.asarray(rows.take(pick), dtype=np.float32))
        groups = Groups(tree.sums, tree.counts, sample, tree.first[pick])
        scores = [score(self.criterion, groups, tree.levels[i], sizes[i]) for i in inside]
        ks = [sizes[i] for i in inside]
        k = ks[0] if self.level is not None else choose(ks, scores, self.tolerance)
        return KEstimate(k=k, criterion=self.criterion, candidates=ks, scores=scores,
                         estimator=self.name,
                         details={"finch_levels": sizes, "finch_level": sizes.index(k), "k_min": self.k_min,
                                  "k_max": k_max})  # fmt: skip
