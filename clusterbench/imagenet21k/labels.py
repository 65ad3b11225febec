"""Label rules of the paper's ImageNet-21K / ImageNet-1K benchmarks as pure numpy functions.

Class selectors return a bool mask over the C classes (so they combine with `|` and `&`);
`subset_view` turns a mask into sample indices and contiguous labels. Everything is
vectorized over samples, so 11M labels take well under a second per call.

Frequency bands are rank based: classes are ordered by (train count, class id), ascending,
and class i of C sits at percentile 100 * rank_i / (C - 1) -- numpy's linear percentile
convention, so without ties a band equals "count within np.percentile(counts, [lo, hi])".
Ties are broken by class id, which keeps band sizes exact and the result deterministic.
`mode="value"` instead keeps every class whose count lies within the percentile values,
tied classes at the edges included; that reading likely explains why the paper's sizes
(e.g. 1060 classes for s=5) are slightly above the rank-based ones.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from clusterbench.imagenet21k.tree import Tree

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

    The set of a sample with label y is indices[indptr[y]:indptr[y+1]]; use
    `expand_label_sets` for per-sample CSR arrays or `in_label_sets` to test predictions.
    """
    return tree.chains


def expand_label_sets(
    indptr: np.ndarray, indices: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample CSR label sets from per-class CSR sets, gathered without a Python loop."""
    indptr = _int_array(indptr, "indptr")
    indices = _int_array(indices, "indices")
    labels = _labels(labels, len(indptr) - 1)
    sizes = np.diff(indptr)[labels]
    out_ptr = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(sizes, out=out_ptr[1:])
    offsets = np.arange(out_ptr[-1], dtype=np.int64) - np.repeat(out_ptr[:-1], sizes)
    return out_ptr, indices[np.repeat(indptr[:-1][labels], sizes) + offsets]


def in_label_sets(
    indptr: np.ndarray, indices: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> np.ndarray:
    """(N,) bool: predicted[i] is in the set of class labels[i]; negative predictions never are."""
    indptr = _int_array(indptr, "indptr")
    indices = _int_array(indices, "indices")
    labels = _labels(labels, len(indptr) - 1)
    predicted = _int_array(predicted, "predicted")
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ in shape")
    # One sorted key per (class, member) pair; membership is then a binary search.
    width = int(max(indices.max(initial=-1), predicted.max(initial=-1))) + 1
    owner = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    keys = np.sort(owner * width + indices)
    query = labels * width + predicted
    pos = np.searchsorted(keys, query).clip(max=max(len(keys) - 1, 0))
    found = keys[pos] == query if len(keys) else np.zeros(len(labels), dtype=bool)
    return found & (predicted >= 0)


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


def frequency_band(counts: np.ndarray, s: float, mode: BandMode = "rank") -> np.ndarray:
    """(C,) mask of the band m_s = [50 - s, 50 + s] around the median class frequency.

    `counts` is the train class histogram (np.bincount(train_labels, minlength=C)).
    s = 5, 15, 25, 35, 45 give the tiny, small, base, large and huge benchmarks.
    """
    if not 0 <= s <= 50:
        raise ValueError(f"band half-width s must be in [0, 50], got {s}")
    return _percentile_range(counts, 50 - s, 50 + s, mode)


def most_frequent(counts: np.ndarray, percent: float = 10, mode: BandMode = "rank") -> np.ndarray:
    """(C,) mask of the `percent` % most frequent classes (percentiles [100 - percent, 100])."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    return _percentile_range(counts, 100 - percent, 100, mode)


def imbalanced_2k(
    counts: np.ndarray, band_s: float = 5, top_percent: float = 10, mode: BandMode = "rank"
) -> np.ndarray:
    """(C,) mask of Imbalanced-2K: the 10%-wide band around the median plus the top 10%.

    The paper's "m_10" is a band 10 percentile points wide, [45, 55] (s=5): with the top 10%
    that gives its 2113 classes, while [40, 60] would give about 3100.
    """
    return frequency_band(counts, band_s, mode) | most_frequent(counts, top_percent, mode)


def centered_2k(
    counts: np.ndarray, num_classes: int | None = None, mode: BandMode = "rank"
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


def subset_view(
    labels: np.ndarray, class_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_indices, remapped_labels, kept_class_ids) of the samples of the kept classes.

    Kept classes are renumbered 0..K-1 in class-id order: kept_class_ids[new] = old.
    """
    mask = np.asarray(class_mask)
    if mask.dtype != bool or mask.ndim != 1:
        raise ValueError(f"class_mask must be a 1-D bool array, got {mask.dtype} {mask.shape}")
    labels = _labels(labels, len(mask))
    kept = np.flatnonzero(mask)
    new_id = np.full(len(mask), -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    idx = np.flatnonzero(mask[labels])
    return idx, new_id[labels[idx]], kept
