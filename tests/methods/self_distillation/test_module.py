"""SelfDistillationClustering: losses over head chunks, the prior, training on tiny groups,
determinism, checkpoints, the frozen last layer, schedules and row views."""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from clusterbench.evaluation.metrics import hungarian_mapping
from clusterbench.methods.self_distillation.module import SelfDistillationClustering
from clusterbench.methods.self_distillation.pairs import NeighbourPairDataModule
from clusterbench.methods.self_distillation.predict import predict, predict_probabilities
from clusterbench.methods.self_distillation.schedules import (
    cosine_schedule,
    cosine_schedule_array,
    linear_warmup,
)
from tests.helpers.self_distillation import knn_blobs, make_trainer, tiny_model

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("single_thread")


def cluster_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """ACC under the project's Hungarian one-to-one mapping of clusters to classes."""
    mapping = hungarian_mapping(pred, labels, int(pred.max()) + 1, int(labels.max()) + 1)
    return float((mapping[pred] == labels).mean())


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


def fit_tiny(loss: str = "temi", seed: int = 0, epochs: int = 5, **overrides):
    x, nn_table, labels = knn_blobs()
    L.seed_everything(seed, verbose=False)
    model = tiny_model(loss, **overrides)
    data = NeighbourPairDataModule(x, nn_table, knn=10, batch_size=32, seed=seed)
    record = EpochLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer(epochs, [record]).fit(model, datamodule=data)
    return model, record.losses, predict(model, x, batch_size=128), labels


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
    probs = predict_probabilities(model, np.asarray(knn_blobs()[0]), batch_size=100)
    torch.testing.assert_close(probs.argmax(-1), pred["top1"])


def test_same_seed_same_predictions():
    first = fit_tiny("temi", seed=3, epochs=2)[2]
    second = fit_tiny("temi", seed=3, epochs=2)[2]
    for key in ("top1", "topk", "confidence"):
        assert torch.equal(first[key], second[key])


def test_checkpoint_restores_teacher_prior_and_best_head(tmp_path):
    x, nn_table, _ = knn_blobs()
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
    x, nn_table, _ = knn_blobs()
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
    x, nn_table, _ = knn_blobs(n=40, knn=5)
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
