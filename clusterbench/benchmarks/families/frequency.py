"""Frequency-based ImageNet-21K benchmarks (section 4.1, Tables 1 and 5).

Class frequencies are the base store's train class histogram.
- `band`: classes whose frequency lies in the percentile band m_s = [50 - s, 50 + s] around
  the median; s = 5, 15, 25, 35, 45 give Tiny, Small, Base, Large, Huge.
- `imbalanced`: Imbalanced-2K = the band m_5 (10 percentile points around the median, the
  paper's "m_10") plus the 10% most frequent classes.
- `centered`: Centered-2K = as many classes as Imbalanced-2K, centred on the median.
Ties (`mode`): "value" (default) keeps every class whose count lies within the percentile
values, so classes tied at an edge all join; it reproduces the paper's sizes (Tiny: 1060
classes, Imbalanced-2K: 2113). "rank" orders classes by (count, class id) for exact sizes.
Centered-2K always takes an exact window of ranks by (count, class id), ties to the lower id.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import subset_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.source import BaseStore, open_base
from clusterbench.core.errors import ConfigError
from clusterbench.data.view import BenchmarkView

MODES = ("value", "rank")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"dataset.mode={mode!r}: expected one of {MODES}")


def _view(name: str, src: BaseStore, kind: str, params: dict, select) -> BenchmarkView:
    tree = load_tree()

    def build():
        train, val = src.labels
        counts = np.bincount(train, minlength=tree.num_classes)
        try:
            mask = select(counts)
        except ValueError as exc:
            raise ConfigError(f"dataset={name}: {exc}") from None
        return subset_view(tree, train, val, mask)

    return cached_view(name, src, kind, params, build)


def band(s: float, mode: str = "value", name: str = "band", **base: Any) -> BenchmarkView:
    """Classes in the frequency band m_s = [50 - s, 50 + s] percentiles."""
    _check_mode(mode)
    src = open_base("in21k", name, **base)
    params = {"s": float(s), "mode": mode}
    return _view(name, src, "band", params, lambda c: rules.frequency_band(c, float(s), mode))


def imbalanced(
    band_s: float = 5,
    top_percent: float = 10,
    mode: str = "value",
    name: str = "imbalanced_2k",
    **base: Any,
) -> BenchmarkView:
    """Imbalanced-2K: the band m_{band_s} plus the `top_percent` % most frequent classes."""
    _check_mode(mode)
    src = open_base("in21k", name, **base)
    params = {"band_s": float(band_s), "top_percent": float(top_percent), "mode": mode}
    return _view(
        name,
        src,
        "imbalanced",
        params,
        lambda c: rules.imbalanced_2k(c, float(band_s), float(top_percent), mode),
    )


def centered(
    band_s: float = 5,
    top_percent: float = 10,
    mode: str = "value",
    name: str = "centered_2k",
    **base: Any,
) -> BenchmarkView:
    """Centered-2K: as many classes as Imbalanced-2K (same parameters), centred on the median."""
    _check_mode(mode)
    src = open_base("in21k", name, **base)
    params = {"band_s": float(band_s), "top_percent": float(top_percent), "mode": mode}

    def select(counts: np.ndarray) -> np.ndarray:
        k = int(rules.imbalanced_2k(counts, float(band_s), float(top_percent), mode).sum())
        return rules.centered_2k(counts, num_classes=k)

    return _view(name, src, "centered", params, select)
