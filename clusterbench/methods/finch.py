"""FINCH (Sarfraz et al., CVPR 2019): a parameter-free hierarchy of partitions from first
neighbours. Level 0 links every row to its nearest neighbour and takes the connected
components; each next level does the same on the previous level's cluster means, until a
level merges nothing (or one cluster is left).

Written here rather than called from the `finch-clust` package (which a test runs beside it
and matches partition for partition): the package holds every row in memory and recomputes
each level's means from them, and finds neighbours with scikit-learn or pynndescent. Here
level 0 reads the run's own cached kNN table (the expensive step, shared with TEMI/SCANv2),
the means come from one chunked pass over memory-mapped rows, and the upper levels search
neighbours with faiss on the configured device: ImageNet-21K's 11M x 1024 never sits in RAM.

`method=finch` predicts with the level whose number of clusters is closest to
`num_clusters` (the view's classes, a given K, or the estimate). Rows it was not built on (val,
`clusterbench assign`) take the cluster of their nearest level-0 mean, not of their nearest train
row: level 0 joins each row with its first neighbour, so its clusters are small groups (4.8
rows on average on digits, 5.9 on the synthetic default), and their means stand in for the rows
at about a fifth of the search and of the saved model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from clusterbench.core.atomic import save_npy_atomic
from clusterbench.core.device import faiss_uses_gpu
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import Rows, chunks
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.task import ClusteringTask, RequestedK

MIN_ROWS = 3  # a first-neighbour graph on fewer rows has nothing to merge


def components(first: np.ndarray) -> np.ndarray:
    """Connected components of the graph i -- first[i] (FINCH's weak connectivity)."""
    n = len(first)
    graph = coo_matrix((np.ones(n, np.int8), (np.arange(n), first)), shape=(n, n))
    return connected_components(graph, directed=True, connection="weak")[1].astype(np.int64)


def first_neighbours(unit: np.ndarray, gpu: bool = False) -> np.ndarray:
    """Each row's nearest other row by cosine (exact, faiss)."""
    index = faiss.IndexFlatIP(unit.shape[1])
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(unit)
    _, found = index.search(unit, 2)
    own = np.arange(len(unit))
    # The row itself comes first unless a duplicate ties with it.
    return np.where(found[:, 0] == own, found[:, 1], found[:, 0]).astype(np.int64)


def sums_by_label(rows: Rows, labels: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """(k, D) float64 sums of the unit rows of each label, one chunked pass over `rows`."""
    out = np.zeros((k, rows.dim))
    for start, block in chunks(rows, chunk):
        part = labels[start : start + len(block)]
        unit = l2_normalize_rows(np.asarray(block, dtype=np.float32)).astype(np.float64)
        member = coo_matrix((np.ones(len(part)), (part, np.arange(len(part)))),
                            shape=(k, len(part))).tocsr()  # fmt: skip
        out += member @ unit
    return out


@dataclass
class Hierarchy:
    """FINCH's partitions: `levels[l]` maps each level-0 cluster to its cluster at level l."""

    first: np.ndarray  # (N,) each row's level-0 cluster
    sums: np.ndarray  # (G0, D) float64 sums of each level-0 cluster's unit rows
    counts: np.ndarray  # (G0,)
    levels: list[np.ndarray] = field(default_factory=list)

    @property
    def sizes(self) -> list[int]:
        return [int(m.max()) + 1 for m in self.levels]

    def labels(self, level: int) -> np.ndarray:
        return self.levels[level][self.first]


def hierarchy(rows: Rows, first_neighbour: np.ndarray, gpu: bool = False) -> Hierarchy:
    """Every FINCH level of `rows`, given each row's first neighbour (the kNN table's column 0)."""
    if len(rows) < MIN_ROWS:
        raise ConfigError(f"FINCH needs at least {MIN_ROWS} rows, got {len(rows)}")
    first = components(np.asarray(first_neighbour, dtype=np.int64))
    g0 = int(first.max()) + 1
    sums = sums_by_label(rows, first, g0)
    counts = np.bincount(first, minlength=g0)
    out = Hierarchy(first, sums, counts, [np.arange(g0)])
    level_sums = sums
    while level_sums.shape[0] > 1:
        means = l2_normalize_rows(level_sums.astype(np.float32))
        merged = components(first_neighbours(means, gpu))
        k = int(merged.max()) + 1
        if k == 1 or level_sums.shape[0] - k <= 1:  # FINCH's exit: one cluster, or <= 1 merge
            break
        member = coo_matrix((np.ones(len(merged)), (merged, np.arange(len(merged)))),
                            shape=(k, len(merged))).tocsr()  # fmt: skip
        level_sums = member @ level_sums
        out.levels.append(merged[out.levels[-1]])
    return out


class FINCH:
    """`method=finch`: FINCH's hierarchy as a clustering method (no training, no K to fit)."""

    def __init__(self, name: str = "finch", num_clusters: RequestedK = None,
                 topk: int = 5, chunk_size: int = 65536) -> None:  # fmt: skip
        self.name, self.num_clusters, self.topk, self.chunk_size = (
            name,
            num_clusters,
            topk,
            chunk_size,
        )
        self.gpu = False
        self.level_of_first: np.ndarray | None = None  # (G0,) level-0 cluster -> chosen cluster
        self.first_means: np.ndarray | None = None  # (G0, D) unit level-0 means
        self.train_labels: np.ndarray | None = None

    def fit(self, task: ClusteringTask) -> FINCH:
        self.gpu = faiss_uses_gpu(task.device)
        tree = hierarchy(task.view.train, task.neighbours_for(1)[:, 0], self.gpu)
        sizes = np.asarray(tree.sizes)
        level = int(np.argmin(np.abs(np.log(sizes) - np.log(task.num_clusters))))
        self.level_of_first = tree.levels[level]
        self.first_means = l2_normalize_rows(tree.sums.astype(np.float32))
        self.train_labels = tree.labels(level)
        task.info.update(finch_levels=[int(s) for s in sizes], finch_level=level,
                         finch_clusters=int(sizes[level]))  # fmt: skip
        return self

    @property
    def clusters(self) -> int:
        return int(self.level_of_first.max()) + 1

    def train_assigned(self) -> Iterator[Assigned]:
        """The train rows' own clusters in the hierarchy (not re-assigned)."""
        labels = self.train_labels
        for start in range(0, len(labels), self.chunk_size):
            yield Assigned(start, labels[start : start + self.chunk_size, None], None)

    def assign(self, rows, topk: int | None = None) -> Iterator[Assigned]:
        """New rows: the cluster of their nearest level-0 cluster (cosine to its mean), best
        first over distinct clusters of the `topk` nearest level-0 means."""
        if self.first_means is None:
            raise RuntimeError("FINCH.assign called before fit")
        width = min(topk or self.topk, self.clusters)
        index = faiss.IndexFlatIP(self.first_means.shape[1])
        if self.gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(self.first_means)
        search = min(len(self.first_means), 4 * width)
        for start, chunk in progress(rows.chunks(self.chunk_size), "assigning",
                                     rows.num_chunks(self.chunk_size)):  # fmt: skip
            cosine, ids = index.search(l2_normalize_rows(np.asarray(chunk, np.float32)), search)
            yield Assigned(start, _distinct(self.level_of_first[ids], width), cosine[:, 0])

    def predict(self, rows) -> Predictions:
        parts = list(self.assign(rows))
        top = np.concatenate([p.topk for p in parts]) if parts else np.empty((0, 1), np.int64)
        return Predictions(top1=top[:, 0], topk=top, num_clusters=self.clusters)

    def save(self, run_dir) -> str:
        """What `clusterbench assign` needs: the unit level-0 means (`finch_means.npy`) and the
        cluster of each (`finch_clusters.npy`)."""
        path = Path(run_dir) / "finch_means.npy"
        save_npy_atomic(path, self.first_means)
        save_npy_atomic(Path(run_dir) / "finch_clusters.npy", self.level_of_first)
        return path.name

    @classmethod
    def load(cls, run_dir, topk: int = 5) -> FINCH:
        """The fitted assignment rule saved by `save` (plain arrays, nothing unpickled)."""
        method = cls(topk=topk)
        method.first_means = np.load(Path(run_dir) / "finch_means.npy", allow_pickle=False)
        method.level_of_first = np.load(Path(run_dir) / "finch_clusters.npy", allow_pickle=False)
        return method

    def fit_predict(self, task: ClusteringTask) -> Predictions:
        return self.fit(task).predict(task.view.val)


def _distinct(candidates: np.ndarray, width: int) -> np.ndarray:
    """(m, width) the first `width` distinct values of every row, best first (the row's first
    value repeated where fewer are distinct)."""
    rows = np.arange(len(candidates))
    out = np.repeat(candidates[:, :1], width, axis=1)
    used = candidates == out[:, :1]
    for j in range(1, width):
        free = ~used
        value = np.where(free.any(1), candidates[rows, free.argmax(1)], out[:, 0])
        out[:, j] = value
        used |= candidates == value[:, None]
    return out
