"""Neighbour mining across processes: two gloo ranks assemble the very table one process
mines, in the same cache file, and ranks that hold different rows stop before any work."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.neighbours import mine_neighbours, search_neighbours
from clusterbench.neighbours_distributed import exact_shard, mine_distributed

K = 6


def features(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((301, 10)).astype(np.float32)


def test_streamed_exact_search_equals_faiss_flat():
    rows = FeatureRows(features())
    table = exact_shard(rows, 0, len(rows), K, "cpu", chunk_size=37)  # blocks of odd sizes
    np.testing.assert_array_equal(table, search_neighbours(rows, K, "Flat", device="cpu"))


def _worker(rank: int, world: int, init: str, x: np.ndarray, cache: str, indexes: list[str],
            fingerprints: list[str], errors: str) -> None:  # fmt: skip
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        for index in indexes:
            mine_distributed(FeatureRows(x), fingerprints[rank], K, cache, rank, world,
                             dist.barrier, index=index, chunk_size=50, nprobe=4)  # fmt: skip
    except ConfigError as exc:
        with open(f"{errors}.{rank}", "w") as f:
            f.write(str(exc))
    dist.destroy_process_group()


def test_two_ranks_write_the_table_one_process_mines(tmp_path):
    """Exact (streamed products) and IVF (the same quantiser on every rank)."""
    x = features()
    cache = tmp_path / "cache"
    indexes = ["Flat", "IVF8,Flat"]
    args = (2, str(tmp_path / "init"), x, str(cache), indexes, ["fp", "fp"], str(tmp_path / "e"))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    for index in indexes:  # the single-process path finds the ranks' table under its own key
        table, from_cache = mine_neighbours(FeatureRows(x), "fp", "train", K, cache,
                                            index=index, nprobe=4, device="cpu")  # fmt: skip
        assert from_cache, index
        alone = search_neighbours(FeatureRows(x), K, index, nprobe=4, device="cpu", seed=0)
        np.testing.assert_array_equal(table, alone)
    assert not list((cache / "knn").glob("*.part*")), "the shares are removed once joined"


def test_ranks_holding_different_rows_stop_before_mining(tmp_path):
    x = features()
    cache = tmp_path / "cache"
    args = (2, str(tmp_path / "init"), x, str(cache), ["Flat"], ["a", "b"], str(tmp_path / "err"))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    for rank in (0, 1):
        message = (tmp_path / f"err.{rank}").read_text()
        assert "the processes disagree on the rows to mine" in message and "\n" not in message
    assert not (cache / "knn").exists() or not list((cache / "knn").glob("*.npy"))
