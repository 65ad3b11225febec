"""Feature stores on disk and the blobs they are made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clusterbench.data import store_writer


def write_store(
    root: Path,
    train: np.ndarray,
    train_labels: np.ndarray,
    val: np.ndarray,
    val_labels: np.ndarray,
    classes: list[str] | None = None,
) -> Path:
    arrays = {"train": train, "train_labels": train_labels, "val": val, "val_labels": val_labels}
    return store_writer.write_store(root, arrays, classes=classes)


def sphere_blobs(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 0.05):
    """Well-separated directions on the sphere: an easy case every method must solve.

    Features (num_classes * n_per_class, dim) float32 and int64 labels, rows shuffled. (For
    Gaussian groups with their exact kNN table, see `self_distillation.knn_blobs`.)
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    order = rng.permutation(labels.size)
    return x[order].astype(np.float32), labels[order].astype(np.int64)


def easy_store_at(root: Path) -> Path:
    """8 classes x (60 train, 20 val) of 16-dim sphere blobs, classes named n00000000.. ."""
    train, train_labels = sphere_blobs(60, 8, 16, seed=0)
    val, val_labels = sphere_blobs(20, 8, 16, seed=0)
    classes = [f"n{i:08d}" for i in range(8)]
    return write_store(root, train, train_labels, val, val_labels, classes=classes)


def store_of(root: Path, n_per_class: int = 60, scale: float = 1.0, dtype=np.float32) -> Path:
    """10 classes x (n_per_class train, 20 val) of 32-dim sphere blobs, times `scale`."""
    train, train_labels = sphere_blobs(n_per_class, 10, 32, seed=0)
    val, val_labels = sphere_blobs(20, 10, 32, seed=0)
    return write_store(root, (train * scale).astype(dtype), train_labels,
                       (val * scale).astype(dtype), val_labels)  # fmt: skip
