"""Sizes of the synthetic ImageNet-21K store used by several tests, and class embeddings that
know its world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
