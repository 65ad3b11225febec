"""Spherical k-means across processes: `method=kmeans method.backend=distributed`.

The faiss path trains in one process. This one runs Lloyd's iterations with torch on every
rank of a torch.distributed job (Lightning Fabric under `trainer=ddp`, SLURM or torchrun, the
launchers TEMI uses), each rank on its own shard of the training rows:

- training rows: the same seeded sample as the faiss path (at most `max_points_per_centroid`
  x K rows), split into `world` contiguous, even shards; a rank reads only its shard, chunk by
  chunk, from the memory-mapped store;
- initial centroids: K distinct rows of the training sample drawn with the seed (faiss's own
  rule: a random subset of the training points), identical on every rank;
- each iteration: every chunk's rows go to their most similar centroid (one matrix product,
  fp32 or bf16), per-cluster sums and counts are added up, `all_reduce`d, and the centroids
  become the normalised means (spherical, as faiss with `spherical=True`);
- an empty cluster is re-seeded as faiss does (`Clustering.cpp`, split_clusters): it takes a
  copy of a cluster drawn in proportion to its size beyond one, both copies nudged apart by
  1/1024, and the donor's count is halved, with a generator seeded by (seed, iteration) so
  every rank makes the same choice;
- rank 0 writes the centroids every `checkpoint_every` iterations (atomically); a rerun in the
  same run directory resumes from the last one, and gives what an uninterrupted run gives.

With one process and the same initial centroids it makes faiss's assignments (a test checks
it). Written here rather than with faiss: faiss has no collective for its sums, and its
GPU k-means spans the GPUs of one machine only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clusterbench.core.atomic import save_npy_atomic, write_json_atomic
from clusterbench.core.distributed import (
    all_reduce_sum,
    check_same_on_every_rank,
    collective,
    shard,
)
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import Rows

SPLIT_EPS = 1.0 / 1024.0  # faiss's perturbation of a split centroid
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def training_rows(n: int, k: int, max_points_per_centroid: int, seed: int) -> np.ndarray | None:
    """The seeded sample both k-means paths train on (None: every row)."""
    budget = k * max_points_per_centroid
    if n <= budget:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, budget, replace=False))


def initial_centroids(rows: Rows, sample: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """K distinct training rows, drawn with the seed, as unit vectors (K, D) float32."""
    n = len(rows) if sample is None else len(sample)
    picked = np.sort(np.random.default_rng([seed, 1]).choice(n, k, replace=False))
    ids = picked if sample is None else sample[picked]
    return l2_normalize_rows(np.asarray(rows.take(ids), dtype=np.float32))


def split_empty(centroids: Tensor, counts: Tensor, rng: np.random.Generator) -> int:
    """faiss's rule for empty clusters (split_clusters), in place on (K, D) centroids and (K,)
    counts: cycling over the clusters, cluster j is taken as the donor with probability
    (n_j - 1) / (n - K). Returns how many were re-seeded."""
    k = counts.shape[0]
    n = float(counts.sum())
    empty = torch.nonzero(counts == 0).flatten().tolist()
    sign = torch.ones(centroids.shape[1], dtype=centroids.dtype, device=centroids.device)
    sign[1::2] = -1.0  # faiss nudges alternate dimensions in opposite directions
    for ci in empty:
        cj = 0
        while rng.random() >= (float(counts[cj]) - 1.0) / (n - k):
            cj = (cj + 1) % k
        centroids[ci] = centroids[cj] * (1 + sign * SPLIT_EPS)
        centroids[cj] = centroids[cj] * (1 - sign * SPLIT_EPS)
        counts[ci] = counts[cj] / 2
        counts[cj] -= counts[ci]
    return len(empty)


def local_sums(
    rows: Rows,
    ids: np.ndarray,
    centroids: Tensor,
    chunk_size: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """One assignment pass over this rank's rows: per-cluster sums (K, D) and counts (K,) in
    float64, and the summed cosine to the assigned centroid (the objective)."""
    k, d = centroids.shape
    device = centroids.device
    sums = torch.zeros((k, d), dtype=torch.float64, device=device)
    counts = torch.zeros(k, dtype=torch.float64, device=device)
    objective = torch.zeros((), dtype=torch.float64, device=device)
    weights = centroids.to(dtype)
    for start in range(0, len(ids), chunk_size):
        block = np.asarray(rows.take(ids[start : start + chunk_size]), dtype=np.float32)
        x = torch.from_numpy(l2_normalize_rows(block)).to(device)
        best, assigned = (x.to(dtype) @ weights.T).float().max(dim=1)
        sums.index_add_(0, assigned, x.double())
        counts += torch.bincount(assigned, minlength=k).double()
        objective += best.double().sum()
    return sums, counts, objective


@dataclass
class Checkpoint:
    """The centroids after `iteration` iterations, and what they belong to."""

    path: Path

    def load(self, identity: dict) -> tuple[np.ndarray, int] | None:
        meta, data = self.path.with_suffix(".json"), self.path.with_suffix(".npy")
        if not (meta.exists() and data.exists()):
            return None
        info = json.loads(meta.read_text())
        if info.get("identity") != identity:
            raise ConfigError(
                f"{meta} belongs to another k-means run ({info.get('identity')}); use another "
                "hydra.run.dir, or delete it to start fresh"
            )
        return np.load(data, allow_pickle=False), int(info["iteration"])

    def save(self, centroids: np.ndarray, iteration: int, identity: dict) -> None:
        save_npy_atomic(self.path.with_suffix(".npy"), centroids)
        write_json_atomic(
            self.path.with_suffix(".json"), {"identity": identity, "iteration": iteration}
        )


def lloyd(
    rows: Rows,
    k: int,
    niter: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    max_points_per_centroid: int = 256,
    chunk_size: int = 65536,
    dtype: str = "float32",
    init: np.ndarray | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 10,
    identity: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Spherical k-means of `rows` on this rank's shard, its sums reduced across ranks.

    Returns the unit centroids (K, D) float32, identical on every rank, and statistics
    (objective per iteration, re-seeded clusters, the rows this rank read)."""
    if dtype not in DTYPES:
        raise ConfigError(f"method.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    check_same_on_every_rank((identity or {}).get("view", ""), "the rows to cluster (the view)")
    sample = training_rows(len(rows), k, max_points_per_centroid, seed)
    ids = np.arange(len(rows)) if sample is None else sample
    if len(ids) < k:
        raise ConfigError(f"{len(ids)} training samples are fewer than num_clusters={k}")
    start, stop = shard(len(ids), rank, world)
    mine = ids[start:stop]
    identity = {**(identity or {}), "k": k, "seed": seed, "rows": len(rows), "dim": rows.dim}
    first = 0
    resumed = checkpoint.load(identity) if checkpoint is not None else None
    if resumed is not None:
        centroids_np, first = resumed
    elif init is not None:
        centroids_np = l2_normalize_rows(np.array(init, dtype=np.float32))
    else:
        centroids_np = initial_centroids(rows, sample, k, seed)
    centroids = torch.from_numpy(np.ascontiguousarray(centroids_np)).to(device)
    objectives, reseeded = [], 0
    for iteration in range(first, niter):
        sums, counts, objective = local_sums(rows, mine, centroids, chunk_size, DTYPES[dtype])
        packed = collective(f"k-means iteration {iteration + 1}", all_reduce_sum,
                            torch.cat([sums.flatten(), counts, objective[None]]))  # fmt: skip
        sums = packed[: k * rows.dim].view(k, rows.dim)
        counts, objective = packed[k * rows.dim : -1], packed[-1]
        means = (sums / counts.clamp(min=1)[:, None]).float()
        means[counts == 0] = 0.0
        rng = np.random.default_rng([seed, iteration, 2])
        reseeded += split_empty(means, counts, rng)
        centroids = torch.nn.functional.normalize(means, dim=1)
        objectives.append(float(objective))
        done = iteration + 1
        if checkpoint is not None and rank == 0 and (done % checkpoint_every == 0):
            checkpoint.save(centroids.cpu().numpy(), done, identity)
    stats = {
        "iterations": niter - first,
        "resumed_at": first if resumed is not None else None,
        "objective": objectives,
        "reseeded_clusters": reseeded,
        "train_points": int(len(ids)),
        "rank_rows": int(len(mine)),
        "world_size": world,
    }
    return centroids.cpu().numpy().astype(np.float32), stats
