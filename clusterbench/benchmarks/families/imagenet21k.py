"""ImageNet-21K as it is: all 10450 classes, with ancestor label sets (Tables 2 and 4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import tree_view
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.source import open_base
from clusterbench.data.view import BenchmarkView


def in21k(name: str = "in21k", **base: Any) -> BenchmarkView:
    """Every sample with its GT class; S_L = the GT class and its class ancestors."""
    src = open_base("in21k", name, **base)
    tree = load_tree()

    def build():
        train, val = src.labels
        identity = np.arange(tree.num_classes, dtype=np.int64)
        return tree_view(tree, train, val, identity, list(tree.class_wnids))

    return cached_view(name, src, "in21k", {}, build)
