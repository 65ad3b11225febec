"""ImageNet-1K benchmarks (Table 1): the balanced original and ImageNet-1K ODD.

Labels are the standard ImageNet-1K class ids (sorted wnids, the order of ReaL and timm);
a base store with a classes.txt in another order is translated. Without real features the
base is the synthetic ImageNet-1K store: the 1000 ImageNet-1K classes of the synthetic
ImageNet-21K world (`clusterbench.benchmarks.imagenet21k.world.materialize_in1k`).
"""

from __future__ import annotations

from typing import Any

from clusterbench.benchmarks.cache import ViewArrays, cached_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.source import open_base
from clusterbench.data.view import BenchmarkView


def in1k(name: str = "in1k", **base: Any) -> BenchmarkView:
    """Every sample of the base store with its ImageNet-1K label."""
    src = open_base("in1k", name, **base)

    def build() -> ViewArrays:
        train, val = src.labels
        return ViewArrays(train, val, len(src.family_classes), list(src.family_classes))

    return cached_view(name, src, "in1k", {}, build)


def in1k_odd(seed: int = 0, name: str = "in1k_odd", **base: Any) -> BenchmarkView:
    """ImageNet-1K ODD: half of the train samples of each odd class index, drawn by `seed`.

    Validation is untouched, so the drop in accuracy measures the effect of the imbalance.
    """
    src = open_base("in1k", name, **base)

    def build() -> ViewArrays:
        train, val = src.labels
        keep = rules.odd_halving(train, int(seed))
        names = list(src.family_classes)
        return ViewArrays(train[keep], val, len(names), names, train_index=keep)

    return cached_view(name, src, "in1k_odd", {"seed": int(seed)}, build)
