"""Label rules of the paper's ImageNet-21K / ImageNet-1K benchmarks as pure numpy functions.

Class selectors return a bool mask over the C classes (so they combine with `|` and `&`);
`clusterbench.benchmarks.hierarchy` turns masks and class maps into views. Everything is
vectorized over samples, so 11M labels take well under a second per call.

Frequency bands default to `mode="value"`: a band keeps every class whose train count lies
within np.percentile(counts, [lo, hi]) (numpy's linear convention), so classes tied with an
edge value all join and a band may exceed its nominal size. Real class histograms are full
of ties (counts are integers in a narrow range), and this reading reproduces the paper's
sizes: Tiny has 1060 classes, not the 1045-1046 of an exact 10% of 10450, and Imbalanced-2K
has 2113 = about 1060 + 1053. `mode="rank"` orders classes by (train count, class id)
ascending and keeps class i of C when 100 * rank_i / (C - 1) lies in [lo, hi]: exact sizes,
ties broken by class id. Without ties both modes agree.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.data.view import LabelSets

BandMode = Literal["rank", "value"]
# Named frequency benchmarks: s of the band m_s = [50 - s, 50 + s].
FREQUENCY_BANDS = {"tiny": 5, "small": 15, "base": 25, "large": 35, "huge": 45}


def _int_array(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{name} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    arr = _int_array(labels, "labels")
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be >= 0, found {arr.min()}")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(f"labels must be < {num_classes}, found {arr.max()}")
    return arr


# --- tree-based benchmarks -----------------------------------------------------------------


def coarse_labels(tree: Tree, d: int) -> tuple[np.ndarray, list[str]]:
    """Coarse benchmark with maximum depth d: (class_map (C,), wnids of the K new labels).

    A class deeper than d moves ONE step, to its direct (chosen) WordNet parent, which may be
    a synset that is not one of the classes; shallower classes keep their label. This
    one-step rule (not "the ancestor at level d") reproduces the paper's class counts.
    New ids are contiguous: surviving classes in class-id order, then new synsets by wnid.
    Relabel samples with `class_map[labels]`.
    """
    if d < 0:
        raise ValueError(f"maximum depth d must be >= 0, got {d}")
    c = tree.num_classes
    target = np.arange(c, dtype=np.int64)
    deep = tree.depth > d  # depth > 0 implies a parent exists
    target[deep] = tree.parent[:c][deep]
    nodes, class_map = np.unique(target, return_inverse=True)
    return class_map.astype(np.int64), [tree.wnids[n] for n in nodes]


def imagenet21k_leaf_classes(tree: Tree) -> np.ndarray:
    """(C,) mask of classes that are no class's chain[1], i.e. leaves of the class tree."""
    mask = np.ones(tree.num_classes, dtype=bool)
    parents = tree.class_parent
    mask[parents[parents >= 0]] = False
    return mask


def wordnet_leaf_classes(tree: Tree) -> np.ndarray:
    """(C,) mask of classes without a WordNet hyponym (`~`) that do have a hypernym (`@`)."""
    c = tree.num_classes
    return ~tree.has_hyponym[:c] & tree.has_hypernym[:c]


def label_sets(tree: Tree) -> tuple[np.ndarray, np.ndarray]:
    """Per-class multi-label sets S_L as CSR (indptr (C+1,), indices): GT class, then ancestors.

    The set of a sample with label y is indices[indptr[y]:indptr[y+1]]; `expand_label_sets`
    gives per-sample sets for `clusterbench.evaluation.metrics.in_label_sets`.
    """
    return tree.chains


def expand_label_sets(indptr: np.ndarray, indices: np.ndarray, labels: np.ndarray) -> LabelSets:
    """Per-sample label sets from per-class CSR sets, checked first (`LabelSets.expand`)."""
    indptr = _int_array(indptr, "indptr")
    indices = _int_array(indices, "indices")
    labels = _labels(labels, len(indptr) - 1)
    return LabelSets.expand(indptr, indices, labels)


# --- frequency benchmarks ------------------------------------------------------------------


def frequency_ranks(counts: np.ndarray) -> np.ndarray:
    """(C,) rank of each class by (count, class id) ascending: 0 = rarest, C-1 = most frequent."""
    counts = _int_array(counts, "counts")
    order = np.argsort(counts, kind="stable")  # stable: equal counts stay in class-id order
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(order))
    return ranks


def _percentile_range(counts: np.ndarray, lo: float, hi: float, mode: BandMode) -> np.ndarray:
    """Mask of classes at percentiles lo..hi (inclusive) of the class-frequency distribution."""
    counts = _int_array(counts, "counts")
    if counts.size == 0:
        return np.zeros(0, dtype=bool)
    if mode == "rank":
        pct = frequency_ranks(counts) * 100.0  # compared with percentile * (C - 1): no rounding
        span = len(counts) - 1
        return (pct >= lo * span) & (pct <= hi * span)
    if mode == "value":
        lo_v, hi_v = np.percentile(counts, [lo, hi])
        return (counts >= lo_v) & (counts <= hi_v)
    raise ValueError(f"mode must be 'rank' or 'value', got {mode!r}")


def frequency_band(counts: np.ndarray, s: float, mode: BandMode = "value") -> np.ndarray:
    """(C,) mask of the band m_s = [50 - s, 50 + s] around the median class frequency.

    `counts` is the train class histogram (np.bincount(train_labels, minlength=C)).
    s = 5, 15, 25, 35, 45 give the tiny, small, base, large and huge benchmarks.
    """
    if not 0 <= s <= 50:
        raise ValueError(f"band half-width s must be in [0, 50], got {s}")
    return _percentile_range(counts, 50 - s, 50 + s, mode)


def most_frequent(counts: np.ndarray, percent: float = 10, mode: BandMode = "value") -> np.ndarray:
    """(C,) mask of the `percent` % most frequent classes (percentiles [100 - percent, 100])."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    return _percentile_range(counts, 100 - percent, 100, mode)


def imbalanced_2k(
    counts: np.ndarray, band_s: float = 5, top_percent: float = 10, mode: BandMode = "value"
) -> np.ndarray:
    """(C,) mask of Imbalanced-2K: the 10%-wide band around the median plus the top 10%.

    The paper's "m_10" is a band 10 percentile points wide, [45, 55] (s=5): with the top 10%
    that gives its 2113 classes, while [40, 60] would give about 3100.
    """
    return frequency_band(counts, band_s, mode) | most_frequent(counts, top_percent, mode)


def centered_2k(
    counts: np.ndarray, num_classes: int | None = None, mode: BandMode = "value"
) -> np.ndarray:
    """(C,) mask of Centered-2K: as many classes as Imbalanced-2K, centred on the median rank.

    `num_classes` defaults to the size of `imbalanced_2k(counts, mode=mode)`; the window of
    ranks [(C - K) // 2, (C - K) // 2 + K) is exact in size, ties broken by class id.
    """
    counts = _int_array(counts, "counts")
    c = len(counts)
    k = int(imbalanced_2k(counts, mode=mode).sum()) if num_classes is None else num_classes
    if not 0 <= k <= c:
        raise ValueError(f"num_classes must be in 0..{c}, got {k}")
    start = (c - k) // 2
    ranks = frequency_ranks(counts)
    return (ranks >= start) & (ranks < start + k)


# --- ImageNet-1K ODD, model-based and random subsets -----------------------------------------


def odd_halving(labels: np.ndarray, seed: int) -> np.ndarray:
    """Sorted train indices of ImageNet-1K ODD: all even-class samples, half of each odd class.

    An odd class with n samples keeps floor(n / 2) of them, drawn uniformly (fixed by seed).
    The validation set is left untouched, as in the paper.
    """
    labels = _labels(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random inside
    sorted_labels = labels[order]
    sizes = np.bincount(labels, minlength=1)
    starts = np.cumsum(sizes) - sizes
    pos = np.arange(n) - starts[sorted_labels]
    keep = (sorted_labels % 2 == 0) | (pos < sizes[sorted_labels] // 2)
    return np.sort(order[keep])


def top_k_classes(per_class_acc: np.ndarray, k: int = 1000) -> np.ndarray:
    """(C,) mask of the k classes with the highest accuracy (model-based subsets).

    Ties go to the lower class id; NaN (e.g. a class without validation samples) ranks last.
    """
    acc = np.asarray(per_class_acc, dtype=np.float64)
    if acc.ndim != 1:
        raise ValueError(f"per_class_acc must be 1-D, got shape {acc.shape}")
    if not 0 <= k <= len(acc):
        raise ValueError(f"k must be in 0..{len(acc)}, got {k}")
    key = np.where(np.isnan(acc), np.inf, -acc)
    mask = np.zeros(len(acc), dtype=bool)
    mask[np.argsort(key, kind="stable")[:k]] = True
    return mask


def random_classes(num_classes: int, k: int, seed: int) -> np.ndarray:
    """(num_classes,) mask of k classes drawn uniformly without replacement (fixed by seed)."""
    if not 0 <= k <= num_classes:
        raise ValueError(f"k must be in 0..{num_classes}, got {k}")
    mask = np.zeros(num_classes, dtype=bool)
    mask[np.random.default_rng(seed).choice(num_classes, size=k, replace=False)] = True
    return mask
