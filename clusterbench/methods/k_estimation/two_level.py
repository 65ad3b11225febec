"""`k_estimation=two_level` (the default): over-cluster, then choose K on the over-clusters.

1. faiss spherical k-means into K' = min(N / `rows_per_group`, `max_groups`) groups, trained
   on at most `points_per_group` seeded rows per group (faiss's own subsampling rule), and
   every trained-on row assigned to its group: sums and counts per group.
2. For each candidate K (a geometric grid over [k_min, k_max], refined around the best),
   weighted spherical k-means of the K' group directions (weights = group sizes) gives a
   partition of the rows; the criterion (`criteria.py`) scores it exactly from the sums.
3. The best-scoring K wins.

Cost: `flops` below (recorded in results.json as `flops`): step 1 is one k-means of K'
centroids on min(N, K' * points_per_group) rows; step 2 is, per candidate K, `nredo` weighted
k-means of the K' groups plus the silhouette of S sampled rows against K clusters. Nothing in it
grows with N beyond the sample; docs/k-estimation.md projects it to ImageNet-21K.
"""

from __future__ import annotations

import faiss
import numpy as np

from clusterbench.core.device import faiss_uses_gpu
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import status
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import Rows
from clusterbench.methods.k_estimation.criteria import Groups
from clusterbench.methods.k_estimation.search import Candidates, KEstimate, check_bounds, search
from clusterbench.methods.task import ClusteringTask


def flops(rows: int, dim: int, groups: int, candidates: list[int], points_per_group: int = 64,
          niter: int = 30, nredo: int = 10, sample: int = 10000) -> float:  # fmt: skip
    """The estimate's arithmetic: every k-means iteration is one (points x centroids x D)
    distance product (2 FLOPs per multiply-add), the rest is lower order."""
    trained = min(rows, groups * points_per_group)
    step1 = 2.0 * niter * trained * groups * dim
    step2 = sum(2.0 * niter * nredo * groups * k * dim + 2.0 * min(sample, trained) * k * dim
                for k in candidates)  # fmt: skip
    return step1 + step2


def overcluster(rows: Rows, groups: int, points_per_group: int, niter: int, sample: int,
                seed: int, gpu: bool) -> Groups:  # fmt: skip
    """Step 1: `groups` spherical k-means groups of a seeded sample of the rows."""
    n = len(rows)
    budget = groups * points_per_group
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, budget, replace=False)) if n > budget else None
    x = l2_normalize_rows(np.asarray(rows.take(pick) if pick is not None else rows.take(
        np.arange(n)), dtype=np.float32))  # fmt: skip
    km = faiss.Kmeans(x.shape[1], groups, niter=niter, spherical=True, seed=seed, gpu=gpu,
                      min_points_per_centroid=1, max_points_per_centroid=points_per_group)  # fmt: skip
    with status(f"k estimation: {groups} groups of {len(x):,} rows"):
        km.train(x)
        _, found = km.index.search(x, 1)
    group = found[:, 0].astype(np.int64)
    # Groups faiss left empty after assignment carry no rows: renumber the rest.
    used, group = np.unique(group, return_inverse=True)
    return Groups.of(x, group, len(used), sample, seed)


def cluster_groups(
    groups: Groups, k: int, niter: int, seed: int, gpu: bool, nredo: int = 1
) -> np.ndarray:
    """Step 2: (G,) cluster of every group, weighted spherical k-means of their directions."""
    centroids = groups.centroids
    km = faiss.Kmeans(centroids.shape[1], k, niter=niter, spherical=True, seed=seed, gpu=gpu,
                      nredo=nredo, min_points_per_centroid=1, max_points_per_centroid=len(centroids))  # fmt: skip
    km.train(centroids, weights=groups.counts.astype(np.float32))
    _, found = km.index.search(centroids, 1)
    return found[:, 0].astype(np.int64)


class TwoLevel:
    name = "two_level"

    def __init__(self, criterion: str = "silhouette", k_min: int = 2, k_max: int | None = None,
                 rows_per_group: int = 20, max_groups: int = 40000, points_per_group: int = 64,
                 candidates: int = 24, refine: bool = True, niter: int = 30,
                 silhouette_sample: int = 10000, tolerance: float = 0.0, nredo: int = 10) -> None:  # fmt: skip
        self.nredo = nredo
        self.criterion, self.k_min, self.k_max = criterion, k_min, k_max
        self.rows_per_group, self.max_groups = rows_per_group, max_groups
        self.points_per_group, self.niter = points_per_group, niter
        self.candidates, self.refine = candidates, refine
        self.silhouette_sample, self.tolerance = silhouette_sample, tolerance
        check_bounds(criterion, k_min, k_max, tolerance)

    def num_groups(self, n: int) -> int:
        return int(min(n // self.rows_per_group, self.max_groups))

    def minimum_rows(self) -> int:
        """The fewest rows for which the groups leave at least two candidates above k_min."""
        return self.rows_per_group * 2 * (self.k_min + 1)

    def estimate(self, task: ClusteringTask, make_method=None) -> KEstimate:
        rows, seed, gpu = task.view.train, task.seed, faiss_uses_gpu(task.device)
        n = len(rows)
        groups_k = self.num_groups(n)
        # Each cluster must be a union of at least two groups for the choice to mean anything.
        ceiling = groups_k // 2
        if ceiling <= self.k_min:
            raise ConfigError(
                f"k_estimation=two_level needs at least {self.minimum_rows()} rows for "
                f"k_min={self.k_min} ({self.rows_per_group} rows per group, two groups per "
                f"cluster); the view has {n}"
            )
        k_max = ceiling if self.k_max is None else min(int(self.k_max), ceiling)
        grid = Candidates(self.k_min, k_max, self.candidates, self.refine)
        groups = overcluster(rows, groups_k, self.points_per_group, self.niter,
                             self.silhouette_sample, seed, gpu)  # fmt: skip

        def partition(k: int) -> np.ndarray:
            return cluster_groups(groups, k, self.niter, seed, gpu, self.nredo)

        found = search(grid, groups, partition, self.criterion, self.tolerance)
        found.estimator = self.name
        cost = flops(n, rows.dim, groups_k, found.candidates, self.points_per_group,
                     self.niter, self.nredo, self.silhouette_sample)  # fmt: skip
        found.details.update(groups=len(groups.counts), grouped_rows=int(groups.counts.sum()),
                             rows=n, flops=float(f"{cost:.4g}"))  # fmt: skip
        return found
