"""The classifier a self-labelling stage trains on the confident rows: one linear layer
(`methods/linear.py`) on standardised features, SGD with momentum and cosine decay,
cross-entropy with label smoothing and SCAN's class balancing. Batches are gathered from the
(memory-mapped) rows, never all rows at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clusterbench.core.atomic import atomic_file
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.data.normalize import l2_normalize, moments, standardize
from clusterbench.data.rows import Rows, as_rows
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.linear import StackedLinear, StackedSGD

if TYPE_CHECKING:
    from clusterbench.refine.self_label import SelfLabel


class SelfLabelClassifier:
    """One linear layer on standardised (or L2 / raw) rows: what predicts after refinement."""

    def __init__(self, dim: int, num_clusters: int, normalize: str, device: torch.device,
                 seed: int) -> None:  # fmt: skip
        self.normalize, self.device = normalize, device
        self.num_clusters = num_clusters
        self.linear = StackedLinear(1, dim, num_clusters, 0.01, shared_seed=seed).to(device)
        self.mean = torch.zeros(dim, device=device)
        self.std = torch.ones(dim, device=device)

    def prepare(self, block: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(block).to(self.device).float()
        if self.normalize == "standardize":
            return standardize(x, self.mean, self.std)
        return l2_normalize(x) if self.normalize == "l2" else x

    def logits(self, block: np.ndarray | Tensor) -> Tensor:
        return self.linear(self.prepare(block))[0]

    @torch.no_grad()
    def assign(self, rows: Rows, topk: int = 5, chunk: int = 65536) -> Iterator[Assigned]:
        """Every row's top-k clusters, with the max softmax probability as confidence."""
        rows = as_rows(rows)
        k = min(topk, self.num_clusters)
        for start in range(0, len(rows), chunk):
            probs = F.softmax(self.logits(rows.chunk(start, min(start + chunk, len(rows)))), -1)
            values, index = probs.topk(k, dim=-1)
            yield Assigned(start, index.cpu().numpy(), values[:, 0].cpu().numpy())

    def predict(self, rows: Rows, topk: int = 5, chunk: int = 65536) -> Predictions:
        parts = list(self.assign(rows, topk, chunk))
        if not parts:  # a view without val rows
            width = min(topk, self.num_clusters)
            return Predictions(np.empty(0), np.empty((0, width)), self.num_clusters, np.empty(0))
        top = np.concatenate([p.topk for p in parts])
        confidence = np.concatenate([p.confidence for p in parts])
        return Predictions(top[:, 0], top, self.num_clusters, confidence)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> SelfLabelClassifier:
        """The classifier `save` wrote (plain tensors, loaded with weights_only)."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        dim, clusters = saved["weight"].shape
        classifier = cls(dim, clusters, str(saved["normalize"]), torch.device(device), seed=0)
        with torch.no_grad():
            classifier.linear.weight[0] = saved["weight"]
            classifier.linear.bias[0] = saved["bias"]
        classifier.mean, classifier.std = saved["mean"].to(device), saved["std"].to(device)
        return classifier

    def save(self, path: Path) -> None:
        """Weights and input statistics (plain tensors: `torch.load(weights_only=True)`)."""
        with atomic_file(path) as tmp:
            torch.save(
                {
                    "weight": self.linear.weight.detach()[0].cpu(),
                    "bias": self.linear.bias.detach()[0].cpu(),
                    "mean": self.mean.cpu(),
                    "std": self.std.cpu(),
                    "normalize": self.normalize,
                },
                tmp,
            )


def class_weights(labels: np.ndarray, num_clusters: int) -> np.ndarray:
    """SCAN's class balancing: each kept cluster weighted by the inverse of its share of the
    kept rows, scaled so the mean weight over the kept rows is 1 (clusters not kept: 0)."""
    counts = np.bincount(labels, minlength=num_clusters).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_clusters)
    weights[present] = labels.shape[0] / (present.sum() * counts[present])
    return weights


def train_classifier(
    rows: Rows,
    kept: np.ndarray,  # (n,) the kept rows' indices
    labels: np.ndarray,
    num_clusters: int,
    settings: SelfLabel,
    device: torch.device,
    seed: int,
) -> tuple[SelfLabelClassifier, list[float]]:
    """The classifier trained on `rows[kept]` with `labels` (one per kept row); returns it and
    each epoch's mean loss. Each batch is gathered from `rows` (sorted reads of a memory-mapped
    store), so only a batch of rows is in memory at a time."""
    rows = as_rows(rows)
    n = kept.shape[0]
    model = SelfLabelClassifier(rows.dim, num_clusters, settings.normalize, device, seed)
    if settings.normalize == "standardize":  # the kept rows' statistics, chunk by chunk
        blocks = (
            torch.as_tensor(rows.take(kept[s : s + settings.chunk_size])).to(device).float()
            for s in range(0, n, settings.chunk_size)
        )
        mean, std = moments(blocks)
        model.mean, model.std = mean.float(), torch.where(std > 0, std, 1.0).float()
    weight = None
    if settings.class_balance:
        weight = torch.as_tensor(class_weights(labels, num_clusters), dtype=torch.float32)
        weight = weight.to(device)
    optimizer = StackedSGD(
        [model.linear.weight, model.linear.bias],
        [settings.lr],
        [settings.weight_decay],
        settings.momentum,
    )
    generator = np.random.default_rng(seed)
    target = torch.as_tensor(labels, dtype=torch.long)
    batch = min(settings.batch_size, n)
    total = settings.epochs * -(-n // batch)
    step, losses = 0, []
    for _ in progress(range(settings.epochs), f"self-labelling on {n:,} rows"):
        order = generator.permutation(n)
        epoch_loss = 0.0
        for start in range(0, n, batch):
            index = np.sort(order[start : start + batch])
            x = torch.as_tensor(rows.take(kept[index]))
            y = target[index].to(device)
            loss = F.cross_entropy(
                model.logits(x), y, weight=weight, label_smoothing=settings.label_smoothing
            )
            model.linear.weight.grad = model.linear.bias.grad = None
            loss.backward()
            optimizer.step(0.5 * (1.0 + math.cos(math.pi * step / total)))
            epoch_loss += float(loss.detach()) * index.shape[0]
            step += 1
        losses.append(epoch_loss / n)
        if not math.isfinite(losses[-1]):
            raise ConfigError(
                f"refine: the self-label classifier's loss became {losses[-1]}; lower "
                f"refine.lr (now {settings.lr}) or set refine.normalize=standardize"
            )
    return model, losses
