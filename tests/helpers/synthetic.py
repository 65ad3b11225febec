"""Sizes of the synthetic ImageNet-21K store used by several tests, and class embeddings that
know its world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import load_tree
from tests.helpers.stores import write_store

# One train sample and one val sample per class (10450 classes), dim 16.
SMALL_IN21K = {"num_train": 10450, "val_per_class": 1, "dim": 16}
# ~2.5 train samples per class, one val sample per class, dim 16.
TINY_IN21K = {"num_train": 26125, "val_per_class": 1, "dim": 16}


def synthetic_embeddings(path: Path) -> Path:
    """Class embeddings that know the synthetic world (SMALL_IN21K): its class means (roots sit
    at 0, so a little noise keeps every row non-zero)."""
    from clusterbench.benchmarks.imagenet21k.tree import load_tree
    from clusterbench.benchmarks.imagenet21k.world import SyntheticIn21kSpec, make_spec, node_means

    tree = load_tree()
    means = node_means(tree, make_spec(SyntheticIn21kSpec, SMALL_IN21K))[: tree.num_classes]
    means += 1e-3 * np.random.default_rng(0).standard_normal(means.shape)
    np.save(path, means.astype(np.float32))
    return path


def in21k_like_store(
    root: Path, dim: int = 8, order_seed: int | None = None
) -> tuple[Path, np.ndarray]:
    """A small real-format store over 6 tree classes with children and their children (wnids
    in classes.txt), features around random class embeddings (returned, (10450, dim), tree
    order): a descent (and the text tower) sees a handful of classes. `order_seed` shuffles
    the train rows: another store of the same shape and classes."""
    tree = load_tree()
    parent = np.asarray(tree.class_parent)
    parents = np.unique(parent[parent >= 0])  # parents of leaves only
    with_children = np.setdiff1d(parents, parent[parents])[:6]
    classes = np.unique(
        np.concatenate([with_children, np.flatnonzero(np.isin(parent, with_children))])
    )
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((tree.num_classes, dim)).astype(np.float32)
    train_labels, val_labels = np.repeat(np.arange(classes.size), 4), np.arange(classes.size)
    if order_seed is not None:
        train_labels = np.random.default_rng(order_seed).permutation(train_labels)
    train = emb[classes[train_labels]] + 0.3 * rng.standard_normal((train_labels.size, dim))
    val = emb[classes[val_labels]] + 0.3 * rng.standard_normal((val_labels.size, dim))
    wnids = [tree.wnids[c] for c in classes]
    write_store(root, train.astype(np.float32), train_labels, val.astype(np.float32),
                val_labels, wnids)  # fmt: skip
    return root, emb
