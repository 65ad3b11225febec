"""Spherical k-means with faiss (cosine distance, centroids re-normalised every iteration).

A plain class, not a LightningModule: faiss already runs k-means on CPU or GPU, multi-threaded,
and subsamples at most `max_points_per_centroid` points per centroid for training (as faiss
does by default), so only that sample is ever loaded from a memory-mapped store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from clusterbench.core.atomic import save_npy_atomic
from clusterbench.core.device import faiss_uses_gpu
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress, status
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.task import ClusteringTask, RequestedK


class SphericalKMeans:
    def __init__(
        self,
        name: str = "kmeans",
        num_clusters: RequestedK = None,
        niter: int = 100,
        nredo: int = 1,
        topk: int = 5,
        max_points_per_centroid: int = 256,
        chunk_size: int = 65536,
        verbose: bool = False,
    ) -> None:
        self.name, self.num_clusters = name, num_clusters
        self.niter, self.nredo, self.topk = niter, nredo, topk
        self.max_points_per_centroid = max_points_per_centroid
        self.chunk_size, self.verbose = chunk_size, verbose
        self.centroids: np.ndarray | None = None
        self.gpu = False

    def fit(self, task: ClusteringTask) -> SphericalKMeans:
        k, rows = task.num_clusters, task.view.train
        if self.niter < 1 or self.nredo < 1:
            raise ConfigError(
                f"method.niter and method.nredo must be >= 1, got {self.niter}, {self.nredo}"
            )
        if len(rows) < k:
            raise ConfigError(f"{len(rows)} training samples are fewer than num_clusters={k}")
        # Load only the sample faiss would train on anyway (it subsamples above this size).
        budget = k * self.max_points_per_centroid
        rng = np.random.default_rng(task.seed)
        sample = (
            np.sort(rng.choice(len(rows), budget, replace=False)) if len(rows) > budget else None
        )
        self.gpu = faiss_uses_gpu(task.device)
        x = l2_normalize_rows(rows.take(sample) if sample is not None else rows.to_numpy())
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=self.niter,
            nredo=self.nredo,
            spherical=True,
            seed=task.seed,
            max_points_per_centroid=self.max_points_per_centroid,
            gpu=self.gpu,
            verbose=self.verbose,
        )
        start = time.perf_counter()
        with status(
            f"k-means: {k} clusters on {x.shape[0]:,} points, up to {self.niter} iterations"
        ):
            km.train(x)
        # faiss stops a redo early once the objective stops changing; record what really ran.
        stats = km.iteration_stats
        task.info.update(
            kmeans_iterations_run=len(stats),
            kmeans_iterations_requested=self.niter * self.nredo,
            kmeans_objective=float(stats[-1]["obj"]) if stats else None,
            kmeans_train_points=int(x.shape[0]),
            kmeans_seconds=round(time.perf_counter() - start, 3),
        )
        self.centroids = km.centroids
        return self

    def assign(self, rows, topk: int | None = None) -> Iterator[Assigned]:
        """Nearest centroids (cosine), best first, and the cosine to the nearest, in chunks."""
        if self.centroids is None:
            raise RuntimeError("SphericalKMeans.assign called before fit")
        k = self.centroids.shape[0]
        topk = min(topk or self.topk, k)
        index = faiss.IndexFlatIP(self.centroids.shape[1])
        if self.gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(self.centroids)
        chunks = rows.chunks(self.chunk_size)
        for start, chunk in progress(chunks, "assigning", rows.num_chunks(self.chunk_size)):
            cosine, ids = index.search(l2_normalize_rows(chunk), topk)
            yield Assigned(start, ids.astype(np.int64), cosine[:, 0].astype(np.float32))

    def predict(self, rows, topk: int | None = None) -> Predictions:
        """Nearest centroid (cosine) and the `topk` nearest centroids of every row."""
        parts = list(self.assign(rows, topk))
        k = self.centroids.shape[0]
        width = min(topk or self.topk, k)
        out = np.concatenate([p.topk for p in parts]) if parts else np.empty((0, width), np.int64)
        return Predictions(top1=out[:, 0], topk=out, num_clusters=k)

    def save(self, run_dir) -> str:
        """What prediction needs: the unit centroids (K, D), `centroids.npy` in the run dir."""
        save_npy_atomic(Path(run_dir) / "centroids.npy", self.centroids)
        return "centroids.npy"

    def fit_predict(self, task: ClusteringTask) -> Predictions:
        return self.fit(task).predict(task.view.val)
