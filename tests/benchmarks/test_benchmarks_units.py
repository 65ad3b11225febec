"""Benchmark building blocks on hand-checkable inputs: label sets through class maps, the
synthetic world's label rules, the ReaL file and the sampled-label evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench.benchmarks.families.real import load_real, restrict
from clusterbench.benchmarks.hierarchy import chain_sets, mask_map, tree_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.timm import timm_real_labels_path
from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.benchmarks.imagenet21k.world import (
    SyntheticIn21kSpec,
    WorldSpec,
    hidden_labels,
    leaf_below,
    long_tail_counts,
    make_spec,
    node_means,
)
from clusterbench.core.errors import ConfigError
from clusterbench.data.view import LabelSets
from clusterbench.evaluation.metrics import evaluate
from clusterbench.evaluation.predictions import Predictions
from clusterbench.evaluation.sampled import evaluate_real, sample_labels
from tests.helpers.tree import (  # the nodes of the 7-class tree fixture `tree`
    ANIMAL,
    DOG,
    ENTITY,
    ORGANISM,
    PUPPY,
    SLED_DOG,
    SUN,
    TOOL,
    WORKING,
)


def rows(sets: LabelSets | tuple) -> list[list[int]]:
    indptr, indices = (sets.indptr, sets.indices) if isinstance(sets, LabelSets) else sets
    return [indices[indptr[i] : indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]


# --- label sets through class maps -----------------------------------------------------------


def test_chain_sets_identity_is_the_chain(tree: Tree) -> None:
    got = rows(chain_sets(tree, np.arange(7)))
    assert got == [tree.chain(c) for c in range(7)]


def test_chain_sets_through_a_coarse_map_drop_repeats(tree: Tree) -> None:
    class_map, wnids = rules.coarse_labels(
        tree, 1
    )  # puppy -> dog, dog -> animal, sled dog -> working
    got = rows(chain_sets(tree, class_map))
    new = {n: i for i, n in enumerate(int(w[1:]) for w in wnids)}
    # puppy: chain puppy, dog, animal, organism -> dog, animal, animal, organism -> no repeat.
    assert got[PUPPY] == [new[DOG], new[ANIMAL], new[ORGANISM]]
    assert got[SLED_DOG] == [new[WORKING], new[ANIMAL], new[ORGANISM]]
    assert got[SUN] == [new[SUN]]


def test_chain_sets_of_a_subset_keep_only_view_classes(tree: Tree) -> None:
    mask = np.zeros(7, bool)
    mask[[PUPPY, ANIMAL, TOOL]] = True
    to_view = mask_map(mask)
    assert to_view.tolist() == [-1, -1, -1, 0, -1, 1, 2]
    got = rows(chain_sets(tree, to_view))
    assert got[PUPPY] == [1, 0] and got[TOOL] == [2] and got[DOG] == [0]


def test_tree_view_drops_left_out_and_excluded_samples(tree: Tree) -> None:
    mask = np.array([1, 0, 1, 1, 0, 1, 0], bool)  # dog, sun, animal, puppy
    train = np.array([DOG, ORGANISM, -1, PUPPY, SUN])
    val = np.array([PUPPY, TOOL, ANIMAL])
    arrays = tree_view(tree, train, val, mask_map(mask), ["dog", "sun", "animal", "puppy"])
    assert arrays.train_index.tolist() == [0, 3, 4] and arrays.train_labels.tolist() == [0, 3, 1]
    assert arrays.val_index.tolist() == [0, 2] and arrays.val_labels.tolist() == [3, 2]
    assert rows(arrays.val_label_sets) == [[3, 0, 2], [2]]
    full = tree_view(tree, np.arange(7), np.arange(7), np.arange(7), list("abcdefg"))
    assert full.train_index is None and full.val_index is None


# --- the synthetic world ---------------------------------------------------------------------


def test_long_tail_counts() -> None:
    rng = np.random.default_rng(0)
    counts = long_tail_counts(1000, 100, 10.0, rng)
    assert counts.sum() == 1000 and counts.min() >= 1 and counts.max() / counts.min() >= 6
    assert long_tail_counts(100, 100, 10.0, rng).tolist() == [1] * 100


def test_descendants_and_hidden_labels(tree: Tree) -> None:
    ptr, idx = tree.descendants()
    below = {c: set(idx[ptr[c] : ptr[c + 1]].tolist()) for c in range(7)}
    assert below[ANIMAL] == {ANIMAL, DOG, PUPPY, SLED_DOG} and below[PUPPY] == {PUPPY}
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), 200)
    hidden = hidden_labels(tree, labels, 0.5, rng)
    assert all(h in below[c] for c, h in zip(labels, hidden, strict=True))
    moved = hidden != labels
    assert 0.3 < moved[labels == ANIMAL].mean() < 0.7 and not moved[labels == PUPPY].any()
    leaves = leaf_below(tree, hidden, rng)
    assert set(leaves.tolist()) <= set(np.flatnonzero(rules.imagenet21k_leaf_classes(tree)))
    assert all(leaf in below[h] for h, leaf in zip(hidden, leaves, strict=True))
    assert np.array_equal(hidden_labels(tree, labels, 1.0, rng), labels)


def test_node_means_follow_the_tree(tree: Tree) -> None:
    assert tree.node_depth.tolist() == [3, 1, 0, 2, 4, 4, 2, 0, 1, 3]
    means = node_means(tree, WorldSpec(dim=256, branch_decay=0.5))
    assert not means[[SUN, ENTITY]].any()  # roots sit at the origin
    dist = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert dist[PUPPY, DOG] < dist[PUPPY, TOOL] and dist[SLED_DOG, WORKING] < dist[SLED_DOG, DOG]


def test_spec_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset.synthetic parameter\(s\) \['size'\]"):
        make_spec(SyntheticIn21kSpec, {"size": 3})
    with pytest.raises(ConfigError, match="dataset.synthetic.dim='big' is not a valid value"):
        make_spec(SyntheticIn21kSpec, {"dim": "big"})
    with pytest.raises(ConfigError, match="num_train=100 is smaller than the 10450"):
        make_spec(SyntheticIn21kSpec, {"num_train": 100}).validate()  # type: ignore[call-arg]
    spec = make_spec(SyntheticIn21kSpec, {"imbalance": 10, "dim": 64})
    assert spec.key == SyntheticIn21kSpec().key  # 10 and 10.0 name the same store


# --- ReaL ------------------------------------------------------------------------------------


def test_timm_real_file_loads() -> None:
    sets = load_real(timm_real_labels_path(), 50000)
    sizes = np.diff(sets.indptr)
    assert len(sets) == 50000 and int((sizes == 0).sum()) == 3163
    assert sets.indices.min() >= 0 and sets.indices.max() <= 999
    kept = restrict(sets, np.flatnonzero(sizes > 0))
    assert len(kept) == 46837 and kept.indices.size == sets.indices.size


def predictions(top1: list[int], num_clusters: int) -> Predictions:
    top1_arr = np.array(top1)
    topk = np.stack([top1_arr, (top1_arr + 1) % num_clusters], axis=1)
    return Predictions(top1=top1_arr, topk=topk, num_clusters=num_clusters)


def test_evaluate_real_by_hand() -> None:
    # Sets {0}, {1}, {0, 1}, {2}; clusters 0, 1, 1, 2. Sample 2 draws 1 (mapping identity,
    # 4/4 right) or 0 (cluster 1 holds labels 1 and 0: still identity, 3/4 right).
    sets = LabelSets(np.array([0, 1, 2, 4, 5]), np.array([0, 1, 0, 1, 2]))
    preds = predictions([0, 1, 1, 2], 3)
    out = evaluate_real(preds, sets, 3, repeats=200, seed=0)["metrics"]
    assert out["top1_L_acc"] == 1.0 and out["top1_L_acc_std"] == 0.0  # identity every time
    assert out["acc"] == pytest.approx(0.875, abs=0.03) and out["acc_std"] == pytest.approx(
        0.125, abs=0.01
    )
    assert out["real_repeats"] == 200 and out["num_clusters"] == 3
    # One repeat is `evaluate` against that repeat's drawn labels.
    drawn = sample_labels(sets, np.random.default_rng(7))
    single = evaluate_real(preds, sets, 3, repeats=1, seed=7)["metrics"]
    plain = evaluate(preds, drawn, 3, sets)["metrics"]
    assert all(single[k] == plain[k] for k in plain)


def test_sampling_needs_non_empty_sets() -> None:
    sets = LabelSets(np.array([0, 1, 1]), np.array([0]))
    with pytest.raises(ValueError, match="1 label sets are empty"):
        sample_labels(sets, np.random.default_rng(0))
    draws = np.stack(
        [
            sample_labels(
                LabelSets(np.array([0, 3]), np.array([4, 5, 6])), np.random.default_rng(s)
            )
            for s in range(60)
        ]
    )
    assert set(draws.ravel().tolist()) == {4, 5, 6}
