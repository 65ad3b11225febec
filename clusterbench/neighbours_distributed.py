"""Nearest-neighbour mining across processes: `clusterbench neighbours trainer=ddp ...`.

Every rank mines the neighbours of its own contiguous share of the query rows against all
rows, and the table is assembled into the same cache file a single process writes (same key,
same format), so a table mined on 8 nodes is reused by a one-process run and the other way
round:

- exact (`knn.index=Flat`): the database is streamed in chunks through one matrix product per
  (query block, database block) with a running top-(k+1), on the rank's device; no rank holds
  more than a block of the database;
- approximate (IVF and other faiss indexes): every rank builds the same faiss index (the
  coarse quantiser trained on the same seeded sample) and searches its own queries in it;
- each rank writes its share (`<key>.part<rank>-of-<world>.npy`, atomically); after a barrier
  rank 0 joins them into `<key>.npy` with its checksum, atomically, and removes the parts. A
  rank that dies leaves no table: the others fail at the barrier, and a rerun starts over.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from clusterbench.core.atomic import save_npy_atomic
from clusterbench.core.distributed import (
    check_same_on_every_rank,
    collective,
    launch_fabric,
    shard,
)
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import Rows
from clusterbench.neighbours import NeighbourCache, build_index, drop_self, resolve_index


def exact_shard(
    rows: Rows, start: int, stop: int, k: int, device: torch.device | str, chunk_size: int
) -> np.ndarray:
    """(stop - start, k) nearest other rows (cosine) of rows [start, stop), best first."""
    n = len(rows)
    out = np.empty((stop - start, k), dtype=np.int64)
    width = min(k + 1, n)
    for q0 in range(start, stop, chunk_size):
        q1 = min(q0 + chunk_size, stop)
        queries = torch.from_numpy(l2_normalize_rows(rows.chunk(q0, q1))).to(device)
        best = torch.full((q1 - q0, 0), -torch.inf, device=device)
        best_ids = torch.empty((q1 - q0, 0), dtype=torch.int64, device=device)
        for d0 in range(0, n, chunk_size):
            base = torch.from_numpy(l2_normalize_rows(rows.chunk(d0, min(d0 + chunk_size, n))))
            sims = queries @ base.to(device).T
            ids = torch.arange(d0, d0 + base.shape[0], device=device).expand_as(sims)
            merged, pick = torch.cat([best, sims], 1).topk(width, dim=1)
            best_ids = torch.cat([best_ids, ids], 1).gather(1, pick)
            best = merged
        own = np.arange(q0, q1)
        out[q0 - start : q1 - start] = drop_self(best_ids.cpu().numpy(), own)
    return out


def faiss_shard(
    rows: Rows, start: int, stop: int, k: int, index: str, nprobe: int, device: str,
    chunk_size: int, seed: int,
) -> np.ndarray:  # fmt: skip
    """The same faiss index on every rank, searched with this rank's queries only."""
    faiss_index = build_index(rows, index, nprobe, device, chunk_size, seed)
    out = np.empty((stop - start, k), dtype=np.int64)
    for q0 in range(start, stop, chunk_size):
        q1 = min(q0 + chunk_size, stop)
        _, found = faiss_index.search(l2_normalize_rows(rows.chunk(q0, q1)), k + 1)
        out[q0 - start : q1 - start] = drop_self(found, np.arange(q0, q1))
    return out


def mine_distributed(
    rows: Rows,
    fingerprint: str,
    k: int,
    cache_dir: str | os.PathLike,
    rank: int,
    world: int,
    barrier,
    index: str = "Flat",
    nprobe: int = 1,
    device: torch.device | str = "cpu",
    faiss_device: str = "cpu",
    chunk_size: int = 65536,
    seed: int = 0,
) -> tuple[Path, bool]:
    """Mine this rank's share and, on rank 0, assemble the cached train table. Returns the
    table's path and whether the cache already held it (then nothing is mined)."""
    n = len(rows)
    if not 1 <= k < n:
        raise ConfigError(f"knn.k={k} must be in [1, N-1] for a split of N={n} samples")
    check_same_on_every_rank(fingerprint, "the rows to mine (the store's fingerprint)")
    index = resolve_index(index, n)
    cache = NeighbourCache(cache_dir)
    key = cache.key(fingerprint, "train", k, index)
    final = cache.dir / f"{key}.npy"
    if cache.load(key, n, k) is not None:
        return final, True
    start, stop = shard(n, rank, world)
    if index == "Flat":
        part = exact_shard(rows, start, stop, k, device, chunk_size)
    else:
        part = faiss_shard(rows, start, stop, k, index, nprobe, faiss_device, chunk_size, seed)
    parts = [cache.dir / f"{key}.part{r}-of-{world}.npy" for r in range(world)]
    save_npy_atomic(parts[rank], part)
    collective("neighbour mining", barrier)  # every share is on disk
    if rank == 0:
        table = np.concatenate(
            [np.load(p, allow_pickle=False) for p in progress(parts, "joining", len(parts))]
        )
        cache.save(key, table)
        for p in parts:
            p.unlink(missing_ok=True)
    collective("neighbour mining", barrier)  # the table is written before any rank returns
    return final, False


def run(cfg, run_dir: Path, console: Console | None = None) -> dict:
    """`clusterbench neighbours`: the train split's kNN table of a dataset, mined by every
    process of the trainer config and cached for the runs that follow."""
    from clusterbench.core.config import build
    from clusterbench.data.spaces import build_view

    console = console or Console()
    view = build_view(cfg.dataset)
    fabric = launch_fabric(dict(build(cfg.trainer).keywords))
    knn = cfg.knn
    path, cached = mine_distributed(
        view.train, view.fingerprint, int(knn.k), cfg.paths.cache_dir,
        fabric.global_rank, fabric.world_size, fabric.barrier, index=str(knn.index),
        nprobe=int(knn.nprobe), device=fabric.device, faiss_device=str(cfg.device),
        chunk_size=int(knn.chunk_size), seed=int(cfg.seed),
    )  # fmt: skip
    if fabric.global_rank == 0:
        how = "already cached" if cached else f"mined by {fabric.world_size} process(es)"
        console.print(f"{knn.k}-NN of {len(view.train):,} rows of {view.name}: {path} ({how})")
    return {"path": str(path), "from_cache": cached, "world_size": fabric.world_size}


def main() -> object:
    from clusterbench.core.cli import command

    return command("neighbours", "clusterbench.neighbours_distributed:run")()
