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
from clusterbench.core.distributed import launch_fabric
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress, status
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.kmeans_distributed import DTYPES, Checkpoint, lloyd
from clusterbench.methods.task import ClusteringTask, RequestedK

BACKENDS = ("faiss", "distributed")


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
        backend: str = "faiss",
        dtype: str = "float32",
        checkpoint_every: int = 10,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"method.backend={backend!r}: expected one of {BACKENDS}")
        if backend == "distributed" and nredo != 1:
            raise ConfigError(
                f"method.nredo={nredo}: the distributed backend runs one start; set method.nredo=1"
            )
        if dtype not in DTYPES:  # checked here too, so a bad value fails before any data
            raise ConfigError(f"method.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
        if checkpoint_every < 1:
            raise ConfigError(f"method.checkpoint_every={checkpoint_every}: expected >= 1")
        self.backend, self.dtype, self.checkpoint_every = backend, dtype, checkpoint_every
        self.rank = 0
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
        if self.backend == "distributed":
            return self._fit_distributed(task)
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

    def _fit_distributed(self, task: ClusteringTask) -> SphericalKMeans:
        """Lloyd's iterations on every rank of the trainer's processes (methods/
        kmeans_distributed.py), launched by Lightning Fabric as the trainer would be."""
        if task.make_trainer is None:
            raise ConfigError("method.backend=distributed needs a trainer config (trainer=cpu|ddp)")
        fabric = launch_fabric(getattr(task.make_trainer, "keywords", {}))
        self.rank = fabric.global_rank
        self.gpu = fabric.device.type == "cuda" and faiss_uses_gpu(task.device)
        start = time.perf_counter()
        with status(f"k-means: {task.num_clusters} clusters on {fabric.world_size} processes"):
            self.centroids, stats = lloyd(
                task.view.train, task.num_clusters, self.niter, task.seed,
                rank=fabric.global_rank, world=fabric.world_size, device=fabric.device,
                max_points_per_centroid=self.max_points_per_centroid,
                chunk_size=self.chunk_size, dtype=self.dtype,
                checkpoint=Checkpoint(Path(task.run_dir) / "kmeans_checkpoint"),
                checkpoint_every=self.checkpoint_every,
                identity={"view": task.view.fingerprint, "niter": self.niter,
                          "max_points_per_centroid": self.max_points_per_centroid},
            )  # fmt: skip
        task.info.update(
            kmeans_backend="distributed",
            kmeans_world_size=stats["world_size"],
            kmeans_iterations_run=stats["iterations"],
            kmeans_iterations_requested=self.niter,
            kmeans_resumed_at=stats["resumed_at"],
            kmeans_objective=stats["objective"][-1] if stats["objective"] else None,
            kmeans_reseeded_clusters=stats["reseeded_clusters"],
            kmeans_train_points=stats["train_points"],
            kmeans_seconds=round(time.perf_counter() - start, 3),
        )
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

    def fit_predict(self, task: ClusteringTask) -> Predictions | None:
        self.fit(task)
        if self.rank != 0:
            return None  # rank 0 evaluates and writes the results
        return self.predict(task.view.val)
