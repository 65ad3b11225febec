"""Tiny TEMI / SCANv2 models, trainers, data and run settings shared by the method tests."""

from __future__ import annotations

import lightning as L
import numpy as np

from clusterbench.methods.self_distillation.module import SelfDistillationClustering

# Tiny heads for whole runs through the CLI (`cli(..., *TINY_RUN)`): seconds, not minutes.
TINY_RUN = ["method.num_heads=2", "method.hidden_dim=32", "method.bottleneck_dim=16",
            "method.knn=5", "method.batch_size=64", "logger=none",
            "trainer.enable_progress_bar=false"]  # fmt: skip


def knn_blobs(n: int = 300, groups: int = 3, dim: int = 16, knn: int = 10, seed: int = 0):
    """Well-separated Gaussian groups, their exact kNN table (self first) and labels.

    Unlike `stores.sphere_blobs`: rows in label order (label = row % groups), not unit-norm,
    and the (n, knn) neighbour table a NeighbourPairDataModule needs comes with them.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(groups, dim)) * 3
    labels = np.arange(n) % groups
    x = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    return x, np.argsort(dist, axis=1)[:, :knn].astype(np.int64), labels


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
