"""What each cluster is, from one run: sizes, centres, label statistics and the rows to show,
computed in chunks over the assignments and the memory-mapped features (10,450 clusters x 11M
rows never meet as a dense matrix).

- pass 1: per-cluster feature sums (the unit centre), sizes, summed confidence, and with labels
  a sparse cluster x class contingency (majority class, purity, the classes it mixes);
- pass 2: per cluster, the `per_group` rows nearest its centre, a seeded random sample (the
  smallest random keys) and the least confident rows, each kept as a running top-m per cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix

from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import Rows


def read_assignments(file, batch_rows: int = 1 << 20):
    """(start, clusters, confidence) batches of an assignments file, in row order."""
    parquet = pq.ParquetFile(file)
    start = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=["cluster", "confidence"]):
        clusters = batch.column("cluster").to_numpy().astype(np.int64)
        conf = batch.column("confidence")
        confidence = (
            conf.to_numpy(zero_copy_only=False).astype(np.float64)
            if conf.null_count < len(conf)
            else np.full(len(clusters), np.nan)
        )
        yield start, clusters, confidence
        start += len(clusters)


class TopPerGroup:
    """The `m` highest-scoring rows of every group, kept across chunks."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.group = np.empty(0, np.int64)
        self.score = np.empty(0, np.float64)
        self.row = np.empty(0, np.int64)

    def add(self, group: np.ndarray, score: np.ndarray, row: np.ndarray) -> None:
        g = np.concatenate([self.group, group])
        s = np.concatenate([self.score, score])
        r = np.concatenate([self.row, row])
        order = np.lexsort((r, -s, g))  # by group, best score first, ties by row
        g, s, r = g[order], s[order], r[order]
        first = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
        rank = np.arange(len(g)) - np.repeat(first, np.diff(np.r_[first, len(g)]))
        keep = rank < self.m
        self.group, self.score, self.row = g[keep], s[keep], r[keep]

    def rows_of(self, groups: int) -> list[list[int]]:
        bounds = np.searchsorted(self.group, np.arange(groups + 1))
        return [self.row[bounds[c] : bounds[c + 1]].tolist() for c in range(groups)]


@dataclass
class ClusterFacts:
    """Everything the atlas shows about the clusters of one split."""

    sizes: np.ndarray
    centres: np.ndarray  # (K, D) unit vectors; zero rows for empty clusters
    mean_confidence: np.ndarray  # NaN where the method has no confidence
    nearest: list[list[int]]
    sample: list[list[int]]
    least_confident: list[list[int]]
    majority: np.ndarray | None = None  # (K,) class id, -1 for empty clusters
    purity: np.ndarray | None = None
    mixes: list[list[tuple[int, int]]] = field(default_factory=list)  # (class, rows), top 3


def cluster_facts(
    rows: Rows,
    assignments,
    num_clusters: int,
    per_group: int = 12,
    labels: np.ndarray | None = None,
    seed: int = 0,
    batch_rows: int = 65536,
) -> ClusterFacts:
    """Two chunked passes over `rows` (view order) and their assignments file."""
    k, d = num_clusters, rows.dim
    sums = np.zeros((k, d), np.float64)
    sizes = np.zeros(k, np.int64)
    confidence = np.zeros(k, np.float64)
    pairs: list[np.ndarray] = []
    has_conf = False  # a method without confidence writes an all-null column
    for start, clusters, conf in read_assignments(assignments, batch_rows):
        has_conf |= bool(np.isfinite(conf).any())
        x = l2_normalize_rows(np.asarray(rows.chunk(start, start + len(clusters)), np.float32))
        _add_rows(sums, clusters, x)
        sizes += np.bincount(clusters, minlength=k)
        confidence += np.bincount(clusters, weights=np.nan_to_num(conf, nan=0.0), minlength=k)
        if labels is not None:
            pairs.append(np.stack([clusters, labels[start : start + len(clusters)]]))
    centres = l2_normalize_rows(sums.astype(np.float32))
    mean_conf = np.where(sizes > 0, confidence / np.maximum(sizes, 1), np.nan)
    if not has_conf:
        mean_conf[:] = np.nan

    nearest, sample, unsure = TopPerGroup(per_group), TopPerGroup(per_group), TopPerGroup(per_group)
    rng = np.random.default_rng(seed)
    for start, clusters, conf in read_assignments(assignments, batch_rows):
        x = l2_normalize_rows(np.asarray(rows.chunk(start, start + len(clusters)), np.float32))
        ids = np.arange(start, start + len(clusters))
        nearest.add(clusters, np.einsum("ij,ij->i", x, centres[clusters]), ids)
        sample.add(clusters, rng.random(len(clusters)), ids)
        if has_conf:
            unsure.add(clusters, -conf, ids)
    facts = ClusterFacts(
        sizes=sizes, centres=centres, mean_confidence=mean_conf,
        nearest=nearest.rows_of(k), sample=sample.rows_of(k),
        least_confident=unsure.rows_of(k) if has_conf else [[] for _ in range(k)],
    )  # fmt: skip
    if labels is not None:
        _label_facts(facts, np.concatenate(pairs, axis=1), k)
    return facts


def _add_rows(sums: np.ndarray, clusters: np.ndarray, x: np.ndarray) -> None:
    """sums[c] += the rows of cluster c, as one sparse (K x m) by (m x D) product."""
    onehot = coo_matrix(
        (np.ones(len(clusters)), (clusters, np.arange(len(clusters)))),
        shape=(sums.shape[0], len(clusters)),
    ).tocsr()
    sums += onehot @ x.astype(np.float64)


def _label_facts(facts: ClusterFacts, pairs: np.ndarray, k: int) -> None:
    """Majority class, purity and the three largest classes of every cluster, from a sparse
    contingency table (clusters x classes never dense)."""
    table = coo_matrix(
        (np.ones(pairs.shape[1], np.int64), (pairs[0], pairs[1])),
        shape=(k, int(pairs[1].max()) + 1),
    ).tocsr()
    table.sum_duplicates()
    majority = np.full(k, -1, np.int64)
    purity = np.zeros(k)
    mixes: list[list[tuple[int, int]]] = []
    for c in range(k):
        lo, hi = table.indptr[c], table.indptr[c + 1]
        cls, counts = table.indices[lo:hi], table.data[lo:hi]
        if len(counts) == 0:
            mixes.append([])
            continue
        order = np.argsort(-counts, kind="stable")[:3]
        majority[c] = cls[order[0]]
        purity[c] = counts[order[0]] / counts.sum()
        mixes.append([(int(cls[i]), int(counts[i])) for i in order])
    facts.majority, facts.purity, facts.mixes = majority, purity, mixes
