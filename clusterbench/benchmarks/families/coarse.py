"""Coarse ImageNet-21K benchmarks (section 4.2, Table 5): maximum hierarchy depth d = 1..9.

A class deeper than d takes the label of its direct WordNet parent, which may be a synset
that is not one of the 10450 classes; shallower classes keep theirs and no sample is dropped
(the one-step rule of `labels.coarse_labels`, which reproduces the paper's class counts).
"""

from __future__ import annotations

from typing import Any

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import tree_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.source import open_base
from clusterbench.core.errors import ConfigError
from clusterbench.data.view import BenchmarkView


def coarse(depth: int, name: str = "coarse", **base: Any) -> BenchmarkView:
    """All samples relabelled to maximum depth `depth`; S_L = the coarse chain of the GT."""
    if int(depth) < 0:
        raise ConfigError(f"dataset.depth must be >= 0 (the paper uses 1..9), got {depth}")
    src = open_base("in21k", name, **base)
    tree = load_tree()

    def build():
        class_map, wnids = rules.coarse_labels(tree, int(depth))
        train, val = src.labels
        return tree_view(tree, train, val, class_map, wnids)

    view = cached_view(name, src, "coarse", {"depth": int(depth)}, build)
    # The shallower depths' class counts: the levels a K estimate is compared with.
    view.coarser_levels = {
        f"depth {d}": len(rules.coarse_labels(tree, d)[1]) for d in range(int(depth) - 1, 0, -1)
    }
    return view
