"""Class separability of GT labels in a feature space (section 6, appendix B.1, Figure 4).

- L_align (Wang & Isola 2020) with nearest-neighbour pairs instead of augmentations: the mean
  squared distance ||f(x_i) - f(x_j)||^2 between L2-normalised features over the pairs
  (i, j), j among the k nearest neighbours of i, that share the GT label (each directed pair
  once: a mutual pair counts twice). Always on unit rows, as defined.
- Davies-Bouldin score of the GT classes (lower = better separated), on every row.
- Silhouette score of the GT classes on a seeded sample of rows (O(S^2) distances).

Distance for the last two: euclidean on L2-normalised rows by default (`normalize: l2`). On the
unit sphere it is sqrt(2 - 2 cos), a monotone function of the cosine similarity that k-means and
the kNN mining here use, so all three metrics see the geometry the methods see; Davies-Bouldin
needs centroids and is defined with euclidean distances (scikit-learn offers no other), so one
distance serves both. `normalize: none` gives euclidean on the raw features.

Everything runs chunked on the device: at most `chunk_elements` distances or gathered values are
held at once, never an N x N (or S x S) matrix; sums are float64 (`dtype`), so the results match
scikit-learn's davies_bouldin_score / silhouette_score to ~1e-12 (a test checks 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clusterbench.core.config import check_fields
from clusterbench.core.errors import ConfigError
from clusterbench.results import SEPARABILITY_METRICS

SPLITS = ("train", "val")
METRICS = SEPARABILITY_METRICS
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class SeparabilitySettings:
    """`separability:` of conf/separability.yaml (instantiated by Hydra)."""

    split: str = "train"
    k: int = 50
    silhouette_sample: int = 50000
    normalize: str = "l2"
    dtype: str = "float64"
    chunk_elements: int = 1 << 24

    def __post_init__(self) -> None:
        check_fields(self, "separability")
        if self.split not in SPLITS:
            raise ConfigError(f"separability.split={self.split!r}: expected one of {SPLITS}")
        if self.normalize not in ("l2", "none"):
            raise ConfigError(f"separability.normalize={self.normalize!r}: expected l2 or none")
        if self.dtype not in DTYPES:
            raise ConfigError(f"separability.dtype={self.dtype!r}: expected one of {list(DTYPES)}")
        if self.k < 1 or self.silhouette_sample < 2 or self.chunk_elements < 1:
            raise ConfigError(
                "separability.k >= 1, separability.silhouette_sample >= 2 and "
                "separability.chunk_elements >= 1 are required"
            )

    @property
    def distance(self) -> str:
        return "euclidean on L2-normalised features" if self.normalize == "l2" else "euclidean"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def _rows_per_chunk(width: int, max_elements: int) -> int:
    return max(1, max_elements // max(width, 1))


def l_align(
    features: Tensor, labels: Tensor, neighbours: np.ndarray, max_elements: int = 1 << 24
) -> tuple[float, int]:
    """(L_align, number of true-positive pairs) over the kNN table `neighbours` (N, k).

    `features` must be L2-normalised; NaN when no neighbour shares its row's label."""
    n, k = neighbours.shape
    total = torch.zeros((), dtype=torch.float64, device=features.device)
    pairs = torch.zeros((), dtype=torch.int64, device=features.device)
    step = _rows_per_chunk(k * features.shape[1], max_elements)
    for start in range(0, n, step):
        stop = min(start + step, n)
        nb = torch.as_tensor(neighbours[start:stop]).to(features.device)
        same = labels[nb] == labels[start:stop, None]
        diff = features[nb].double() - features[start:stop, None].double()
        total += (diff * diff).sum(-1)[same].sum()
        pairs += same.sum()
    count = int(pairs)
    return (float(total) / count if count else float("nan")), count


def _encode(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(dense label 0..K-1 per row, row count per label) over the labels present."""
    _, dense, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return dense, counts


def _sq_norms(x: Tensor) -> Tensor:
    return (x * x).sum(1)


def _distances(a: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Euclidean distances (rows of a) x (rows of b), by the Gram expansion as scikit-learn's
    euclidean_distances, clipped at 0 before the square root."""
    d2 = _sq_norms(a)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0).sqrt_()


def davies_bouldin(
    x: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64, max_elements: int = 1 << 24
) -> float:
    """Davies-Bouldin score of the labelling: mean over classes of the worst (s_i + s_j) / d_ij,
    s = mean distance to the class centroid, d = centroid distance; as scikit-learn's."""
    dense, counts = _encode(labels)
    k = int(counts.shape[0])
    if k < 2 or k >= x.shape[0]:
        return float("nan")
    step = _rows_per_chunk(x.shape[1], max_elements)
    sums = torch.zeros((k, x.shape[1]), dtype=dtype, device=x.device)
    for start in range(0, x.shape[0], step):
        sums.index_add_(0, dense[start : start + step], x[start : start + step].to(dtype))
    centroids = sums / counts[:, None].to(dtype)
    intra = torch.zeros(k, dtype=dtype, device=x.device)
    for start in range(0, x.shape[0], step):
        own = dense[start : start + step]
        gap = x[start : start + step].to(dtype) - centroids[own]
        intra.index_add_(0, own, gap.norm(dim=1))
    intra /= counts.to(dtype)
    c_sq = _sq_norms(centroids)
    worst = torch.empty(k, dtype=dtype, device=x.device)
    largest = torch.zeros((), dtype=dtype, device=x.device)
    step = _rows_per_chunk(k, max_elements)
    for start in range(0, k, step):
        d = _distances(centroids[start : start + step], centroids, c_sq)
        rows = torch.arange(start, start + d.shape[0], device=x.device)
        d[rows - start, rows] = 0.0  # exact zeros on the diagonal, as scikit-learn sets them
        largest = torch.maximum(largest, d.max())
        d = torch.where(d == 0, torch.inf, d)
        worst[start : start + d.shape[0]] = ((intra[start : start + step, None] + intra) / d).amax(
            1
        )
    # scikit-learn's degenerate cases: all classes are single points, or all centroids coincide.
    if torch.allclose(intra, torch.zeros_like(intra)) or float(largest) <= 1e-8:
        return 0.0
    return float(worst.mean())


def silhouette_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The seeded sample the silhouette is computed on: `size` distinct rows, sorted."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 20]).choice(n, size=size, replace=False))


def silhouette(
    x: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64, max_elements: int = 1 << 24
) -> float:
    """Mean silhouette (b - a) / max(a, b) over the rows of `x` (the sample), as scikit-learn's
    silhouette_score: a = mean distance to the own class (0 for singletons), b = smallest mean
    distance to another class. Rows are scored in blocks; per-class distance sums only."""
    dense, counts = _encode(labels)
    k, s = int(counts.shape[0]), x.shape[0]
    if not 2 <= k <= s - 1:
        return float("nan")
    xs = x.to(dtype)
    x_sq = _sq_norms(xs)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    step = _rows_per_chunk(max(s, k), max_elements)
    sizes = counts.to(dtype)
    for start in range(0, s, step):
        block = xs[start : start + step]
        d = _distances(block, xs, x_sq)
        rows = torch.arange(d.shape[0], device=x.device)
        d[rows, rows + start] = 0.0  # a row's distance to itself is exactly 0
        per_class = torch.zeros((d.shape[0], k), dtype=dtype, device=x.device)
        per_class.index_add_(1, dense, d)
        own = dense[start : start + step]
        own_size = sizes[own]
        intra = per_class[rows, own] / (own_size - 1).clamp_min(1)
        means = per_class / sizes
        means[rows, own] = torch.inf
        inter = means.min(1).values
        score = (inter - intra) / torch.maximum(intra, inter)
        score = torch.nan_to_num(torch.where(own_size > 1, score, 0.0), nan=0.0)
        total += score.double().sum()
    return float(total) / s
