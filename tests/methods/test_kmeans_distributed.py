"""Distributed spherical k-means: one process makes faiss's assignments from the same initial
centroids, two gloo processes make what one makes, and a resumed run what an uninterrupted
one makes."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from clusterbench.core.distributed import shard
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import FeatureRows
from clusterbench.methods.kmeans_distributed import (
    Checkpoint,
    initial_centroids,
    lloyd,
    split_empty,
)
from tests.helpers.stores import sphere_blobs

K = 8


def blobs() -> np.ndarray:
    x, _ = sphere_blobs(50, K, 12, seed=5, spread=0.3)
    return x


def faiss_assignments(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, ...]:
    km = faiss.Kmeans(x.shape[1], K, niter=niter, spherical=True, max_points_per_centroid=10**6)
    km.train(l2_normalize_rows(x.copy()), init_centroids=init)
    _, found = km.index.search(l2_normalize_rows(x.copy()), 1)
    return found[:, 0], km.centroids


def assignments(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (l2_normalize_rows(x.copy()) @ centroids.T).argmax(1)


def test_one_process_makes_faiss_assignments_from_the_same_start():
    x = blobs()
    init = initial_centroids(FeatureRows(x), None, K, seed=0)
    ours, stats = lloyd(FeatureRows(x), K, niter=6, seed=0, init=init)
    theirs, faiss_centroids = faiss_assignments(x, init, niter=6)
    np.testing.assert_array_equal(assignments(x, ours), theirs)
    np.testing.assert_allclose(ours, faiss_centroids, atol=1e-5)
    assert stats["world_size"] == 1 and len(stats["objective"]) == 6


def _worker(rank: int, world: int, init_file: str, x: np.ndarray, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    centroids, stats = lloyd(FeatureRows(x), K, niter=5, seed=3, rank=rank, world=world,
                             chunk_size=64)  # fmt: skip
    np.save(f"{out}.{rank}.npy", centroids)
    np.save(f"{out}.{rank}.rows.npy", np.array([stats["rank_rows"]]))
    torch.distributed.destroy_process_group()


def test_two_processes_make_what_one_makes(tmp_path):
    x = blobs()
    single, _ = lloyd(FeatureRows(x), K, niter=5, seed=3, chunk_size=64)
    out = str(tmp_path / "centroids")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), x, out), nprocs=2, join=True)
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(f"{out}.{rank}.npy"), single, atol=1e-6)
    rows = [int(np.load(f"{out}.{r}.rows.npy")[0]) for r in (0, 1)]
    assert rows == [200, 200]  # each rank read its own half


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    rows = FeatureRows(blobs())
    straight, _ = lloyd(rows, K, niter=5, seed=1)
    saved = Checkpoint(tmp_path / "kmeans_checkpoint")
    lloyd(rows, K, niter=2, seed=1, checkpoint=saved, checkpoint_every=2)  # "killed" after 2
    resumed, stats = lloyd(rows, K, niter=5, seed=1, checkpoint=saved, checkpoint_every=2)
    assert stats["resumed_at"] == 2 and stats["iterations"] == 3
    np.testing.assert_allclose(resumed, straight, atol=1e-6)
    with pytest.raises(ConfigError, match="belongs to another k-means run"):
        lloyd(rows, K, niter=5, seed=2, checkpoint=saved)


def test_empty_clusters_are_reseeded_from_a_populated_one():
    centroids = torch.eye(4)[:3].clone()
    counts = torch.tensor([0.0, 10.0, 2.0])
    assert split_empty(centroids, counts, np.random.default_rng(0)) == 1
    assert float(counts.sum()) == 12.0 and float(counts[0]) > 0
    donor = int(torch.argmin((centroids[1:] - centroids[0]).abs().sum(1))) + 1
    assert torch.allclose(centroids[0], centroids[donor], atol=1e-2)


def test_shards_are_even_and_never_empty():
    assert [shard(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ConfigError, match="3 processes for 2 training rows"):
        shard(2, 0, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "mpi"}, "method.backend='mpi': expected one of"),
        ({"backend": "distributed", "nredo": 3}, "the distributed backend runs one start"),
        ({"checkpoint_every": 0}, "method.checkpoint_every=0"),
        ({"dtype": "float16"}, "method.dtype='float16': expected one of"),
    ],
)
def test_bad_backend_settings_fail_in_one_line(overrides, message):
    from clusterbench.methods.kmeans import SphericalKMeans

    with pytest.raises(ConfigError, match=message):
        SphericalKMeans(**overrides)


def test_bf16_products_find_the_same_partition_up_to_boundary_rows():
    from sklearn.metrics import adjusted_rand_score

    x = blobs()
    exact, _ = lloyd(FeatureRows(x), K, niter=5, seed=0)
    half, _ = lloyd(FeatureRows(x), K, niter=5, seed=0, dtype="bfloat16")
    assert adjusted_rand_score(assignments(x, exact), assignments(x, half)) > 0.9


def _dying_worker(rank: int, world: int, init_file: str, x: np.ndarray, out: str) -> None:
    """Rank 1 dies in the middle of iteration 3; rank 0 must fail with one line."""
    import os

    import clusterbench.methods.kmeans_distributed as kd

    dist_init = torch.distributed.init_process_group
    dist_init("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    calls = {"n": 0}
    local = kd.local_sums

    def dying(*args, **kwargs):
        calls["n"] += 1
        if rank == 1 and calls["n"] == 3:
            os._exit(1)  # a killed process: no exception, no goodbye
        return local(*args, **kwargs)

    kd.local_sums = dying
    try:
        lloyd(FeatureRows(x), K, niter=5, seed=3, rank=rank, world=world, chunk_size=64,
              checkpoint=Checkpoint(Path(out) / "ckpt"), checkpoint_every=1)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - what the rank reports is the test's subject
        (Path(out) / f"error.{rank}").write_text(f"{type(exc).__name__}: {exc}")


def test_a_rank_killed_mid_iteration_fails_the_job_in_one_line(tmp_path):
    x = blobs()
    context = mp.get_context("spawn")  # not mp.spawn: it would kill rank 0 as rank 1 dies
    procs = [context.Process(target=_dying_worker,
                             args=(rank, 2, str(tmp_path / "init"), x, str(tmp_path)))
             for rank in range(2)]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert procs[1].exitcode == 1
    message = (tmp_path / "error.0").read_text()
    assert message.startswith("ClusterbenchError: rank 0: another process of the job stopped")
    assert "k-means iteration 3" in message and "\n" not in message
    # The checkpoint holds the last complete iteration, never a partial one.
    assert json.loads((tmp_path / "ckpt.json").read_text())["iteration"] == 2
