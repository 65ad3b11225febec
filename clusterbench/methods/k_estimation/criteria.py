"""Label-free scores of candidate partitions that are unions of small groups of rows (the
over-clusters of `two_level`, FINCH's first partition), computed exactly from the groups' row
sums and counts: no N x N matrix, no second pass over the rows per candidate.

With unit rows, the mean cosine distance from a row x to the n_c rows of cluster c is
1 - x . S_c / n_c (S_c: the rows' sum), so

- `silhouette`: the cosine silhouette of a seeded sample of rows, exact against every row of
  every cluster (not only the sample): a = (n_own - x . S_own) / (n_own - 1) (x itself left
  out), b = the smallest 1 - x . S_c / n_c over the other clusters, s = (b - a) / max(a, b),
  0 for a row alone in its cluster (scikit-learn's convention). O(sample x K x D).
- `calinski_harabasz`: between- over within-cluster dispersion, each over its degrees of
  freedom, exact from the sums: W = n - sum_c |S_c|^2 / n_c, B = sum_c |S_c|^2 / n_c - |S|^2 / n.
  O(groups x D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from clusterbench.data.normalize import l2_normalize_rows

CRITERIA = ("silhouette", "calinski_harabasz")


@dataclass
class Groups:
    """Small groups of unit rows: what every candidate partition is built from."""

    sums: np.ndarray  # (G, D) float64: the sum of each group's unit rows
    counts: np.ndarray  # (G,) rows per group
    sample: np.ndarray  # (S, D) float32 unit rows, seeded, for the silhouette
    sample_group: np.ndarray  # (S,) each sampled row's group

    @classmethod
    def of(cls, unit_rows: np.ndarray, group: np.ndarray, num_groups: int, sample: int,
           seed: int) -> Groups:  # fmt: skip
        """Groups of rows held in memory (`unit_rows` L2-normalised, (n, D))."""
        sums, counts = group_sums(unit_rows, group, num_groups)
        pick = np.random.default_rng(seed).permutation(len(group))[:sample]
        return cls(sums, counts, unit_rows[pick], group[pick])

    @property
    def centroids(self) -> np.ndarray:
        """(G, D) float32 unit mean directions, for clustering the groups themselves."""
        return l2_normalize_rows(self.sums.astype(np.float32))


def group_sums(unit_rows: np.ndarray, group: np.ndarray, num_groups: int,
               into: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per-group row sums (float64) and counts, one sparse product (added to `into`)."""
    n = len(group)
    member = csr_matrix((np.ones(n), (group, np.arange(n))), shape=(num_groups, n))
    sums = np.asarray(member @ unit_rows.astype(np.float64))
    counts = np.bincount(group, minlength=num_groups)
    if into is not None:
        into[0][...] += sums
        into[1][...] += counts
        return into
    return sums, counts


def merge(groups: Groups, mapping: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster sums and counts of the partition that puts group g in cluster mapping[g]."""
    member = csr_matrix((np.ones(len(mapping)), (mapping, np.arange(len(mapping)))),
                        shape=(k, len(mapping)))  # fmt: skip
    return np.asarray(member @ groups.sums), np.bincount(mapping, groups.counts, k)


def silhouette(groups: Groups, mapping: np.ndarray, k: int, chunk: int = 1024) -> float:
    """Mean cosine silhouette of the sampled rows, exact against all rows (module docstring)."""
    sums, counts = merge(groups, mapping, k)
    occupied = counts > 0
    mean_dir = (sums / np.where(occupied, counts, 1)[:, None]).astype(np.float32)
    own = mapping[groups.sample_group]
    total = 0.0
    for start in range(0, len(own), chunk):
        x, c = groups.sample[start : start + chunk], own[start : start + chunk]
        dots = x @ mean_dir.T  # (s, K): x . S_c / n_c
        dist = 1.0 - dots
        dist[:, ~occupied] = np.inf
        n_own = counts[c]
        a = (n_own - n_own * dots[np.arange(len(c)), c]) / np.maximum(n_own - 1, 1)
        dist[np.arange(len(c)), c] = np.inf
        b = dist.min(1)
        s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
        total += float(np.where(n_own > 1, s, 0.0).sum())
    return total / len(own)


def calinski_harabasz(groups: Groups, mapping: np.ndarray, k: int) -> float:
    """Calinski-Harabasz index of the partition over all grouped rows (module docstring)."""
    sums, counts = merge(groups, mapping, k)
    n = float(counts.sum())
    occupied = counts > 0
    k_eff = int(occupied.sum())
    if not 1 < k_eff < n:
        return float("nan")
    explained = float(((sums[occupied] ** 2).sum(1) / counts[occupied]).sum())
    total = float((groups.sums.sum(0) ** 2).sum()) / n
    between, within = explained - total, n - explained
    return (between / (k_eff - 1)) / max(within / (n - k_eff), 1e-12)


def score(criterion: str, groups: Groups, mapping: np.ndarray, k: int) -> float:
    if criterion == "silhouette":
        return silhouette(groups, mapping, k)
    if criterion == "calinski_harabasz":
        return calinski_harabasz(groups, mapping, k)
    raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
