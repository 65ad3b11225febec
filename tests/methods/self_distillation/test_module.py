"""SelfDistillationClustering and NeighbourPairDataModule: sampling, training, state."""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from clusterbench.core.errors import ConfigError
from clusterbench.methods.self_distillation.module import SelfDistillationClustering
from clusterbench.methods.self_distillation.pairs import AnchorBatchSampler, NeighbourPairDataModule
from clusterbench.methods.self_distillation.predict import predict, predict_probabilities
from clusterbench.methods.self_distillation.schedules import (
    cosine_schedule,
    cosine_schedule_array,
    linear_warmup,
)

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("single_thread")


def blobs(n: int = 300, groups: int = 3, dim: int = 16, knn: int = 10, seed: int = 0):
    """Well-separated Gaussian groups, their exact kNN table (self first) and labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(groups, dim)) * 3
    labels = np.arange(n) % groups
    x = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    return x, np.argsort(dist, axis=1)[:, :knn].astype(np.int64), labels


def cluster_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    k = max(pred.max(), labels.max()) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (pred, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(labels)


class EpochLosses(L.Callback):
    """Mean training loss of every epoch (logged by the module after callbacks' epoch end)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def _record(self, trainer) -> None:
        if "train/loss_epoch" in trainer.callback_metrics:
            self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer)


def make_trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        deterministic=True,
    )


def tiny_model(loss: str = "temi", **overrides) -> SelfDistillationClustering:
    args = dict(
        in_dim=16,
        num_clusters=3,
        loss=loss,
        num_heads=4,
        hidden_dim=64,
        bottleneck_dim=32,
        base_lr=1e-3,
        teacher_momentum=0.9,
        final_teacher_momentum=0.9,
    )
    args.update(overrides)
    return SelfDistillationClustering(**args)


def fit_tiny(loss: str = "temi", seed: int = 0, epochs: int = 5, **overrides):
    x, nn_table, labels = blobs()
    L.seed_everything(seed, verbose=False)
    model = tiny_model(loss, **overrides)
    data = NeighbourPairDataModule(x, nn_table, knn=10, batch_size=32, seed=seed)
    record = EpochLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer(epochs, [record]).fit(model, datamodule=data)
    return model, record.losses, predict(model, x, batch_size=128), labels


# --------------------------------------------------------------------------- pairs
def test_epoch_visits_every_anchor_once_and_draws_from_knn():
    x, nn_table, _ = blobs(n=30, knn=4)
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
    x, nn_table, _ = blobs(n=40, knn=5)
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
    x, nn_table, _ = blobs(n=30, knn=4)
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


# --------------------------------------------------------------------------- module
@pytest.mark.parametrize("loss", ["temi", "scanv2"])
def test_head_chunks_give_the_same_losses_prior_and_gradients(loss):
    torch.manual_seed(0)
    whole = tiny_model(loss, num_heads=5)
    chunked = tiny_model(loss, num_heads=5, head_chunk=2)
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(12, 16)
    n = torch.randn(12, 16)
    losses = [m.head_losses(x, n) for m in (whole, chunked)]
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(whole.prior, chunked.prior)
    for values in losses:
        values.mean().backward()
    pairs = zip(whole.student.named_parameters(), chunked.student.parameters(), strict=True)
    for (name, p), q in pairs:
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_temi_step_updates_prior_before_loss():
    model = tiny_model("temi")
    uniform = model.prior.clone()
    model.head_losses(torch.randn(8, 16), torch.randn(8, 16))
    assert not torch.allclose(model.prior, uniform)
    torch.testing.assert_close(model.prior.sum(-1), torch.ones(4))


@pytest.mark.parametrize("loss", ["temi", "scanv2"])
def test_tiny_fit_learns_the_groups(loss):
    model, epoch_losses, pred, labels = fit_tiny(loss)
    assert len(epoch_losses) == 5 and epoch_losses[-1] < epoch_losses[0]
    assert cluster_accuracy(pred["top1"].numpy(), labels) >= 0.95
    assert pred["topk"].shape == (300, 3) and torch.equal(pred["topk"][:, 0], pred["top1"])
    assert ((pred["confidence"] > 1 / 3) & (pred["confidence"] <= 1)).all()
    # The best head is the one with the lowest mean loss over the last epoch.
    assert int(model.best_head) == int(torch.argmin(model.last_epoch_head_losses))
    probs = predict_probabilities(model, np.asarray(blobs()[0]), batch_size=100)
    torch.testing.assert_close(probs.argmax(-1), pred["top1"])


def test_same_seed_same_predictions():
    first = fit_tiny("temi", seed=3, epochs=2)[2]
    second = fit_tiny("temi", seed=3, epochs=2)[2]
    for key in ("top1", "topk", "confidence"):
        assert torch.equal(first[key], second[key])


def test_checkpoint_restores_teacher_prior_and_best_head(tmp_path):
    x, nn_table, _ = blobs()
    L.seed_everything(0, verbose=False)
    model = tiny_model("temi", input_norm="standardize")
    trainer = make_trainer(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=NeighbourPairDataModule(x, nn_table, knn=10, batch_size=32))
    torch.testing.assert_close(model.input_norm.mean, torch.from_numpy(x.mean(0)))
    model.best_head.fill_(2)  # a non-default value must survive the round trip
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = SelfDistillationClustering.load_from_checkpoint(path)
    for key in ("prior", "best_head", "last_epoch_head_losses", "input_norm.mean"):
        torch.testing.assert_close(restored.state_dict()[key], model.state_dict()[key])
    assert int(restored.best_head) == 2
    a, b = predict(model, x), predict(restored, x)
    assert torch.equal(a["top1"], b["top1"]) and torch.equal(a["confidence"], b["confidence"])


def test_last_layer_frozen_in_first_epoch_and_lr_scaled():
    x, nn_table, _ = blobs()
    L.seed_everything(0, verbose=False)
    model = tiny_model("scanv2", base_lr=2e-3)
    last = [p.clone() for p in model.student.last_layer.parameters()]
    first = model.student.mlp[0].weight.clone()
    trainer = make_trainer(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=NeighbourPairDataModule(x, nn_table, knn=10, batch_size=64))
    for before, after in zip(last, model.student.last_layer.parameters(), strict=True):
        assert torch.equal(before, after)
    assert not torch.equal(first, model.student.mlp[0].weight)
    assert float(trainer.callback_metrics["train/lr"]) == pytest.approx(2e-3 * 64 / 256)
    assert float(trainer.callback_metrics["train/teacher_momentum"]) == pytest.approx(0.9)
    assert "train/head_loss/03" in trainer.callback_metrics


def test_schedules_follow_dino():
    warm, total = 3, 10
    values = cosine_schedule_array(1.0, 0.1, epochs=5, steps_per_epoch=2, warmup_epochs=1)
    iters = np.arange(total - 2)
    expected = np.concatenate(
        [np.linspace(0.0, 1.0, 2), 0.1 + 0.45 * (1 + np.cos(np.pi * iters / len(iters)))]
    )
    np.testing.assert_allclose(values, expected)
    assert cosine_schedule(50, total, 0.996, 1.0) == 1.0
    assert [linear_warmup(e, warm, 0.04, 0.1) for e in range(5)] == pytest.approx(
        [0.04, 0.07, 0.1, 0.1, 0.1]
    )
    assert math.isclose(cosine_schedule(0, total, 0.996, 1.0), 0.996)


class RowView:
    """A minimal row view (as a benchmark view offers): len, dim, take, chunk."""

    def __init__(self, features: np.ndarray) -> None:
        self._features = features
        self.dim = features.shape[1]

    def __len__(self) -> int:
        return len(self._features)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._features[rows].astype(np.float32)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self._features[start:stop].astype(np.float32)


@pytest.mark.parametrize("on_device", [True, False])
def test_row_views_work_like_arrays(on_device):
    x, nn_table, _ = blobs(n=40, knn=5)
    plain = NeighbourPairDataModule(x, nn_table, knn=5, batch_size=16)
    view = NeighbourPairDataModule(
        RowView(x), nn_table, knn=5, batch_size=16, features_on_device=on_device
    )
    for a, b in zip(plain.train_dataloader(), view.train_dataloader(), strict=True):
        a, b = plain.on_after_batch_transfer(a, 0), view.on_after_batch_transfer(b, 0)
        assert torch.equal(a["anchor"], b["anchor"]) and torch.equal(a["neighbour"], b["neighbour"])
    model = tiny_model()
    model.fit_input_statistics(RowView(x), chunk_rows=7)
    got, expected = predict(model, RowView(x), batch_size=9), predict(model, x, batch_size=40)
    assert torch.equal(got["topk"], expected["topk"])
    torch.testing.assert_close(got["confidence"], expected["confidence"])
