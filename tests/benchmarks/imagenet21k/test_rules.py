"""Benchmark label rules on small hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.evaluation.metrics import in_label_sets

# --- tree-based ----------------------------------------------------------------------------
from tests.helpers.tree import (  # the nodes of the 7-class tree fixture `tree`
    ANIMAL,
    DOG,
    ORGANISM,
    PUPPY,
    SLED_DOG,
    SUN,
    TOOL,
    WORKING,
)


def test_tree_derived_views(tree: Tree) -> None:
    assert tree.depth.tolist() == [2, 0, 0, 1, 2, 3, 0]
    assert tree.chain(PUPPY) == [PUPPY, DOG, ANIMAL, ORGANISM]
    assert tree.chain(SLED_DOG) == [SLED_DOG, ANIMAL, ORGANISM]


@pytest.mark.parametrize(
    ("d", "class_map", "nodes"),
    [
        (0, [3, 1, 2, 1, 5, 0, 4], [DOG, ORGANISM, SUN, ANIMAL, TOOL, WORKING]),
        (1, [3, 1, 2, 3, 5, 0, 4], [DOG, ORGANISM, SUN, ANIMAL, TOOL, WORKING]),
        (2, [0, 1, 2, 3, 4, 0, 5], [DOG, ORGANISM, SUN, ANIMAL, SLED_DOG, TOOL]),
        (3, list(range(7)), list(range(7))),
    ],
)
def test_coarse_labels_move_one_step(tree: Tree, d: int, class_map: list, nodes: list) -> None:
    got_map, wnids = rules.coarse_labels(tree, d)
    assert got_map.tolist() == class_map
    assert wnids == [tree.wnids[n] for n in nodes]


def test_coarse_labels_rejects_negative_depth(tree: Tree) -> None:
    with pytest.raises(ValueError, match="d must be"):
        rules.coarse_labels(tree, -1)


def test_leaf_masks(tree: Tree) -> None:
    assert np.flatnonzero(rules.imagenet21k_leaf_classes(tree)).tolist() == [
        SUN,
        SLED_DOG,
        PUPPY,
        TOOL,
    ]
    # sun has no hypernym, tool has a (non-class) hyponym.
    assert np.flatnonzero(rules.wordnet_leaf_classes(tree)).tolist() == [SLED_DOG, PUPPY]


def test_label_sets_and_expansion(tree: Tree) -> None:
    indptr, indices = rules.label_sets(tree)
    assert indptr.tolist() == [0, 3, 4, 5, 7, 10, 14, 15]
    assert indices[indptr[PUPPY] : indptr[PUPPY + 1]].tolist() == [PUPPY, DOG, ANIMAL, ORGANISM]
    sets = rules.expand_label_sets(indptr, indices, np.array([SUN, PUPPY, SUN]))
    assert sets.indptr.tolist() == [0, 1, 5, 6]
    assert sets.indices.tolist() == [SUN, PUPPY, DOG, ANIMAL, ORGANISM, SUN]
    sets = rules.expand_label_sets(indptr, indices, np.array([], dtype=np.int64))
    assert sets.indptr.tolist() == [0] and sets.indices.size == 0


def test_in_label_sets(tree: Tree) -> None:
    indptr, indices = rules.label_sets(tree)
    labels = np.array([PUPPY, PUPPY, PUPPY, SUN, SUN, DOG])
    pred = np.array([ORGANISM, TOOL, -1, SUN, ORGANISM, PUPPY])
    sets = rules.expand_label_sets(indptr, indices, labels)
    assert in_label_sets(pred, sets).tolist() == [1, 0, 0, 1, 0, 0]


# --- frequency ---------------------------------------------------------------------------------

# Sorted by (count, id): ids 1,6,2,3,8,0,9,5,7,4 -> ranks below; ids 2 and 3 tie at count 3.
COUNTS = np.array([5, 1, 3, 3, 9, 7, 2, 8, 4, 6])


def test_frequency_ranks() -> None:
    assert rules.frequency_ranks(COUNTS).tolist() == [5, 0, 2, 3, 9, 7, 1, 8, 4, 6]


def test_frequency_band_rank_and_value() -> None:
    # Rank percentile 100 r / 9 in [25, 75] -> ranks 3..6 -> ids 3, 8, 0, 9.
    assert np.flatnonzero(rules.frequency_band(COUNTS, 25, "rank")).tolist() == [0, 3, 8, 9]
    # np.percentile gives [3, 6.75]: the tied id 2 joins (value mode is the default).
    assert np.flatnonzero(rules.frequency_band(COUNTS, 25)).tolist() == [0, 2, 3, 8, 9]
    assert np.flatnonzero(rules.frequency_band(COUNTS, 15, "rank")).tolist() == [0, 8]
    assert rules.frequency_band(COUNTS, 50).all()
    with pytest.raises(ValueError, match="s must be"):
        rules.frequency_band(COUNTS, 55)
    with pytest.raises(ValueError, match="mode"):
        rules.frequency_band(COUNTS, 5, "median")  # type: ignore[arg-type]


def test_frequency_band_without_ties_matches_value_mode() -> None:
    counts = np.random.default_rng(0).permutation(101) * 3 + 7
    for s in rules.FREQUENCY_BANDS.values():
        rank = rules.frequency_band(counts, s, "rank")
        assert rank.sum() == 2 * s + 1
        assert np.array_equal(rank, rules.frequency_band(counts, s, "value"))


def test_most_frequent_imbalanced_centered() -> None:
    assert np.flatnonzero(rules.most_frequent(COUNTS, 20, "rank")).tolist() == [4, 7]
    imb = rules.imbalanced_2k(COUNTS, band_s=15, top_percent=20, mode="rank")
    assert np.flatnonzero(imb).tolist() == [0, 4, 7, 8]
    # Same number of classes (4) around the median: ranks 3..6.
    assert np.flatnonzero(rules.centered_2k(COUNTS, num_classes=4)).tolist() == [0, 3, 8, 9]
    # Defaults: band [45, 55] is empty for 10 classes, top 10% is id 4; centred: rank 4 = id 8.
    assert np.flatnonzero(rules.imbalanced_2k(COUNTS, mode="rank")).tolist() == [4]
    assert np.flatnonzero(rules.centered_2k(COUNTS, mode="rank")).tolist() == [8]


def test_imbalanced_2k_size_at_scale() -> None:
    counts = np.random.default_rng(1).permutation(10450) + 100  # no ties
    for mode in ("rank", "value"):  # no ties: the modes agree
        imb, cen = rules.imbalanced_2k(counts, mode=mode), rules.centered_2k(counts, mode=mode)
        assert imb.sum() == cen.sum() == 1044 + 1045
        top, band = rules.most_frequent(counts, 10, mode), rules.frequency_band(counts, 5, mode)
        assert not (top & band).any()


def test_value_mode_keeps_ties_at_the_edges() -> None:
    # 30 classes: counts 1..10 three times each -> every band edge value is shared.
    counts = np.tile(np.arange(1, 11), 3)
    value, rank = rules.frequency_band(counts, 5), rules.frequency_band(counts, 5, "rank")
    assert rank.sum() == 2  # ranks 14, 15 of 0..29 (100 r / 29 in [45, 55])
    assert value.sum() == 6 and (value >= rank).all()  # both counts tied at the edges join
    assert set(counts[value]) == {5, 6}


# --- ODD, model-based, random, subsets ---------------------------------------------------------


def test_odd_halving() -> None:
    labels = np.array([0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    keep = rules.odd_halving(labels, seed=0)
    assert np.array_equal(keep, np.unique(keep))
    assert np.bincount(labels[keep], minlength=4).tolist() == [1, 2, 2, 1]
    assert np.array_equal(keep, rules.odd_halving(labels, seed=0))
    picks = {tuple(rules.odd_halving(labels, seed=s).tolist()) for s in range(20)}
    assert len(picks) > 1  # the seed chooses which odd-class samples stay


def test_top_k_classes() -> None:
    acc = np.array([0.5, 0.9, np.nan, 0.9, 0.1])
    assert np.flatnonzero(rules.top_k_classes(acc, 2)).tolist() == [1, 3]
    assert np.flatnonzero(rules.top_k_classes(acc, 4)).tolist() == [0, 1, 3, 4]
    assert rules.top_k_classes(acc, 5).all()
    with pytest.raises(ValueError, match="k must be"):
        rules.top_k_classes(acc, 6)


def test_random_classes() -> None:
    a = rules.random_classes(100, 10, seed=3)
    assert a.sum() == 10 and np.array_equal(a, rules.random_classes(100, 10, seed=3))
    assert not np.array_equal(a, rules.random_classes(100, 10, seed=4))
