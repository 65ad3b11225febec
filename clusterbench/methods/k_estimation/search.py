"""The K search shared by the estimators: a geometric grid of candidates, refined around the
best, each candidate scored by a label-free criterion, and the choice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.methods.k_estimation.criteria import CRITERIA, Groups, score


@dataclass
class KEstimate:
    """What an estimator found: `method_info.k_estimation` in results.json."""

    k: int
    criterion: str
    candidates: list[int]
    scores: list[float | None]
    estimator: str = ""
    details: dict = field(default_factory=dict)

    def describe(self) -> dict:
        order = np.argsort(self.candidates, kind="stable")
        return {
            "estimator": self.estimator,
            "k": int(self.k),
            "criterion": self.criterion,
            "candidates": [int(self.candidates[i]) for i in order],
            "scores": [_plain(self.scores[i]) for i in order],
            **self.details,
        }


def check_bounds(criterion: str, k_min: int, k_max: int | None, tolerance: float) -> None:
    """The settings every estimator shares, checked before any row is read."""
    if criterion not in CRITERIA:
        raise ConfigError(f"k_estimation.criterion={criterion!r}: expected one of {CRITERIA}")
    if k_min < 2:
        raise ConfigError(f"k_estimation.k_min={k_min}: clustering needs at least 2 clusters")
    if k_max is not None and k_max < k_min:
        raise ConfigError(
            f"k_estimation.k_min={k_min} exceeds k_max={k_max}: no candidate K is left"
        )
    if tolerance < 0:
        raise ConfigError(f"k_estimation.tolerance={tolerance}: expected >= 0")


def _plain(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


@dataclass
class Candidates:
    """A geometric grid of `count` integers over [k_min, k_max], refined around the best."""

    k_min: int
    k_max: int
    count: int = 24
    refine: bool = True

    def grid(self) -> list[int]:
        values = np.geomspace(self.k_min, self.k_max, max(self.count, 2))
        return sorted({int(round(v)) for v in values} | {self.k_min, self.k_max})

    def around(self, best: int, tried: list[int]) -> list[int]:
        """Integers strictly between the best's neighbours in `tried`, geometric, untried."""
        ordered = sorted(tried)
        i = ordered.index(best)
        low = ordered[i - 1] if i > 0 else best
        high = ordered[i + 1] if i + 1 < len(ordered) else best
        if high - low <= 2:
            return []
        values = np.geomspace(low + 1, high - 1, min(self.count, high - low - 1))
        return sorted({int(round(v)) for v in values} - set(tried))


def choose(candidates: list[int], scores: list[float], tolerance: float) -> int:
    """The best-scoring K; with `tolerance` > 0 the largest K at a local maximum of the score
    curve that is within `tolerance * |best|` of the best (a finer level of a nested
    structure, when the criterion prefers the coarsest one)."""
    order = np.argsort(candidates)
    ks = np.asarray(candidates)[order]
    values = np.asarray(scores, dtype=np.float64)[order]
    values = np.where(np.isfinite(values), values, -np.inf)
    best = int(np.argmax(values))
    if tolerance <= 0:
        return int(ks[best])
    floor = values[best] - tolerance * abs(values[best])
    left = np.concatenate([[-np.inf], values[:-1]])
    right = np.concatenate([values[1:], [-np.inf]])
    peaks = np.flatnonzero((values >= left) & (values >= right) & (values >= floor))
    return int(ks[peaks.max()])


def search(grid: Candidates, groups: Groups, partition: Callable[[int], np.ndarray],
           criterion: str, tolerance: float = 0.0) -> KEstimate:  # fmt: skip
    """Score every candidate's `partition(k)` (a group -> cluster map), refine, choose."""
    tried: dict[int, float] = {}

    def run(ks: list[int]) -> None:
        for k in progress(ks, f"k estimation: {len(ks)} candidates", len(ks)):
            tried[k] = score(criterion, groups, partition(k), k)

    run(grid.grid())
    if grid.refine:
        best = choose(list(tried), list(tried.values()), tolerance)
        run(grid.around(best, list(tried)))
    ks = list(tried)
    k = choose(ks, [tried[c] for c in ks], tolerance)
    return KEstimate(k=k, criterion=criterion, candidates=ks, scores=[tried[c] for c in ks],
                     details={"k_min": grid.k_min, "k_max": grid.k_max,
                              "tolerance": tolerance})  # fmt: skip
