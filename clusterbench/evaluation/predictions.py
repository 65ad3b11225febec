"""What every method hands to the evaluation: cluster ids, never an N x C matrix.

`Predictions` are the val split's, held whole for the metrics; `Assigned` is one chunk of any
split's rows, streamed by a method's `assign(rows)` into the assignment files, so no split is
ever held whole."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Predictions:
    """Cluster predictions for the validation split.

    top1: (N,) cluster id; topk: (N, k) cluster ids, best first (k = 5 in the paper);
    confidence: (N,) maximum softmax probability, for methods that have probabilities.
    Keeping only these makes evaluation at 10450 clusters x 500k samples cheap.
    """

    top1: np.ndarray
    topk: np.ndarray
    num_clusters: int
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.top1 = np.asarray(self.top1, dtype=np.int64)
        self.topk = np.asarray(self.topk, dtype=np.int64)
        if self.topk.ndim == 1:
            self.topk = self.topk[:, None]
        if self.topk.shape[0] != self.top1.shape[0]:
            raise ValueError(
                f"topk has {self.topk.shape[0]} rows but top1 has {self.top1.shape[0]}"
            )
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, dtype=np.float64)


@dataclass
class Assigned:
    """One chunk of rows' assignments: rows `start .. start + len(topk)` of the split.

    topk: (m, k) cluster ids, best first (column 0 is the cluster); confidence: (m,) the
    method's own (max softmax probability, or cosine to the nearest centroid), or None.
    """

    start: int
    topk: np.ndarray
    confidence: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.topk.shape[0])
