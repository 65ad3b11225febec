"""Turn a map from ImageNet-21K tree classes to view labels into view arrays with label sets.

Every ImageNet-21K benchmark is one such map (`to_view`, (C,) int64, -1 = class left out):
the identity (in21k), the coarse class map, or a renumbering of a class subset (frequency,
leaf, model-based, relabelled). Samples of left-out classes are dropped; the label set S_L
of a validation sample is its class's chain (GT, then every class ancestor; section 4.4)
mapped through the same map: ancestors outside the view drop out, and labels merged by a
coarse map appear once.
"""

from __future__ import annotations

import numpy as np

from clusterbench.benchmarks.cache import ViewArrays
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import Tree


def chain_sets(tree: Tree, to_view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tree class CSR (indptr, indices): its chain in view labels, chain order, no repeats."""
    indptr, indices = tree.chains
    owner = np.repeat(np.arange(tree.num_classes, dtype=np.int64), np.diff(indptr))
    mapped = to_view[indices]
    kept = np.flatnonzero(mapped >= 0)
    width = int(to_view.max(initial=0)) + 1
    _, first = np.unique(owner[kept] * width + mapped[kept], return_index=True)
    kept = kept[np.sort(first)]  # first occurrence of each (class, label), in chain order
    out = np.zeros(tree.num_classes + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=tree.num_classes), out=out[1:])
    return out, mapped[kept]


def mask_map(mask: np.ndarray) -> np.ndarray:
    """to_view of a class subset: kept classes renumbered 0..K-1 in class-id order."""
    to_view = np.full(mask.shape[0], -1, dtype=np.int64)
    to_view[mask] = np.arange(int(mask.sum()))
    return to_view


def _split(labels: np.ndarray, to_view: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(index or None when every sample stays, view labels); tree labels < 0 are dropped."""
    mapped = np.where(labels >= 0, to_view[np.maximum(labels, 0)], -1)
    keep = np.flatnonzero(mapped >= 0)
    if keep.size == labels.size:
        return None, mapped
    return keep, mapped[keep]


def tree_view(
    tree: Tree,
    train: np.ndarray,
    val: np.ndarray,
    to_view: np.ndarray,
    class_names: list[str],
) -> ViewArrays:
    """View arrays of tree-labelled splits (-1 = excluded sample) under `to_view`."""
    train_index, train_labels = _split(train, to_view)
    val_index, val_labels = _split(val, to_view)
    indptr, indices = chain_sets(tree, to_view)
    val_tree = val if val_index is None else val[val_index]
    return ViewArrays(
        train_labels=train_labels,
        val_labels=val_labels,
        num_classes=len(class_names),
        class_names=list(class_names),
        train_index=train_index,
        val_index=val_index,
        val_label_sets=rules.expand_label_sets(indptr, indices, val_tree),
    )


def subset_view(tree: Tree, train: np.ndarray, val: np.ndarray, mask: np.ndarray) -> ViewArrays:
    """The samples of the classes in `mask` (C,), renumbered in class-id order."""
    names = [tree.wnids[c] for c in np.flatnonzero(mask)]
    return tree_view(tree, train, val, mask_map(mask), names)
