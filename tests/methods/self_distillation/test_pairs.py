"""NeighbourPairDataModule and AnchorBatchSampler: each epoch's anchors, the neighbours drawn
for them, seeding, the split across processes, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterbench.core.errors import ConfigError
from clusterbench.methods.self_distillation.pairs import AnchorBatchSampler, NeighbourPairDataModule
from tests.helpers.self_distillation import knn_blobs, tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_epoch_visits_every_anchor_once_and_draws_from_knn():
    x, nn_table, _ = knn_blobs(n=30, knn=4)
    data = NeighbourPairDataModule(x, nn_table, knn=3, batch_size=8, seed=1)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    batches = [data.on_after_batch_transfer(b, 0) for b in loader]
    assert [len(b["anchor_index"]) for b in batches] == [8, 8, 8, 6]
    anchors = torch.cat([b["anchor_index"] for b in batches])
    assert sorted(anchors.tolist()) == list(range(30))
    for b in batches:
        allowed = torch.from_numpy(nn_table[b["anchor_index"].numpy(), :3])
        assert (allowed == b["neighbour_index"][:, None]).any(dim=1).all()
        torch.testing.assert_close(b["anchor"], torch.from_numpy(x)[b["anchor_index"]])
        torch.testing.assert_close(b["neighbour"], torch.from_numpy(x)[b["neighbour_index"]])


def _epoch(sampler: AnchorBatchSampler, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampling_is_seeded_per_seed_and_epoch():
    def sampler(seed):
        return AnchorBatchSampler(100, 16, knn=5, seed=seed)

    first, again = _epoch(sampler(0), 3), _epoch(sampler(0), 3)
    assert all(
        torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(first, again, strict=True)
    )
    assert not torch.equal(first[0][0], _epoch(sampler(0), 4)[0][0])
    assert not torch.equal(first[0][0], _epoch(sampler(1), 3)[0][0])


@pytest.mark.parametrize("num_anchors", [64, 70, 65])
def test_ranks_split_each_global_batch_disjointly(num_anchors):
    single = _epoch(AnchorBatchSampler(num_anchors, 16, knn=5, seed=2), 1)
    ranks = [
        _epoch(AnchorBatchSampler(num_anchors, 16, 5, seed=2, num_replicas=2, rank=r), 1)
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, (anchors, columns) in enumerate(single):
        parts = [ranks[r][step] for r in range(2)]
        assert len(parts[0][0]) == len(parts[1][0])  # equal share per process
        merged = torch.cat([p[0] for p in parts])
        merged_cols = torch.cat([p[1] for p in parts])
        # Same pairs as one process with the global batch (the last batch may wrap around).
        assert torch.equal(merged[: len(anchors)], anchors)
        assert torch.equal(merged_cols[: len(columns)], columns)
        if len(merged) == len(anchors):
            assert len(set(parts[0][0].tolist()) & set(parts[1][0].tolist())) == 0


def test_cpu_gather_matches_device_gather():
    x, nn_table, _ = knn_blobs(n=40, knn=5)
    on_device = NeighbourPairDataModule(x, nn_table, knn=5, batch_size=16, seed=0)
    on_cpu = NeighbourPairDataModule(
        x.astype(np.float16), nn_table, knn=5, batch_size=16, seed=0, features_on_device=False
    )
    for a, b in zip(on_device.train_dataloader(), on_cpu.train_dataloader(), strict=True):
        a = on_device.on_after_batch_transfer(a, 0)
        b = on_cpu.on_after_batch_transfer(b, 0)
        assert torch.equal(a["neighbour_index"], b["neighbour_index"])
        torch.testing.assert_close(a["anchor"], b["anchor"].float(), atol=1e-2, rtol=1e-2)


def test_bad_inputs_raise_config_errors():
    x, nn_table, _ = knn_blobs(n=30, knn=4)
    with pytest.raises(ConfigError, match="knn=10"):
        NeighbourPairDataModule(x, nn_table, knn=10)
    with pytest.raises(ConfigError, match="shape"):
        NeighbourPairDataModule(x, nn_table[:10], knn=2)
    with pytest.raises(ConfigError, match="integers"):
        NeighbourPairDataModule(x, nn_table.astype(np.float32), knn=2)
    with pytest.raises(ConfigError, match="divisible"):
        AnchorBatchSampler(30, 15, knn=2, num_replicas=2, rank=0)
    with pytest.raises(ConfigError, match="loss"):
        tiny_model("dino")
