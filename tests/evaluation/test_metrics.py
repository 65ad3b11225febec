"""Metric values on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from clusterbench.data.view import LabelSets
from clusterbench.evaluation.metrics import evaluate, hungarian_mapping, in_label_sets
from clusterbench.evaluation.predictions import Predictions


def test_permuted_clusters_give_perfect_scores():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    perm = np.array([2, 0, 1])  # cluster id = perm[label]
    preds = Predictions(top1=perm[labels], topk=perm[labels][:, None], num_clusters=3)
    m = evaluate(preds, labels, 3)["metrics"]
    assert m["acc"] == 1.0 and m["nmi"] == pytest.approx(1.0) and m["ari"] == pytest.approx(1.0)
    assert m["top5_acc"] == 1.0


def test_hand_computed_accuracy_and_top5():
    # Overlap (clusters x classes): c0 -> {0: 2, 1: 1}, c1 -> {1: 2}, c2 -> {2: 1, 0: 1}.
    labels = np.array([0, 0, 1, 1, 1, 2, 0])
    top1 = np.array([0, 0, 0, 1, 1, 2, 2])
    # Optimal matching: c0->0, c1->1, c2->2 gives 2 + 2 + 1 = 5 of 7 correct.
    topk = np.stack([top1, np.array([1, 1, 1, 0, 0, 0, 0])], axis=1)
    m = evaluate(Predictions(top1, topk, 3), labels, 3)["metrics"]
    assert m["acc"] == pytest.approx(5 / 7)
    # Sample 2 (label 1, top1 c0 -> 0) is rescued by its second guess c1 -> 1; sample 6
    # (label 0, c2 -> 2) by c0 -> 0. Top-5 -> 1 is therefore 7/7.
    assert m["top5_acc"] == pytest.approx(1.0)


def test_overclustering_maps_one_cluster_per_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    top1 = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # each class split over two clusters
    mapping = hungarian_mapping(top1, labels, num_clusters=4, num_classes=2)
    assert (mapping >= 0).sum() == 2  # only two clusters can be matched
    m = evaluate(Predictions(top1, top1[:, None], 4), labels, 2)["metrics"]
    assert m["acc"] == pytest.approx(0.5)
    assert m["nmi"] < 1.0 and m["num_clusters"] == 4 and m["empty_clusters"] == 0


def test_underclustering_leaves_classes_unmatched():
    labels = np.array([0, 0, 1, 1, 2, 2])
    top1 = np.array([0, 0, 0, 0, 1, 1])
    m = evaluate(Predictions(top1, top1[:, None], 2), labels, 3)["metrics"]
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["empty_clusters"] == 0


def test_empty_clusters_are_counted():
    labels = np.array([0, 1, 2, 0])
    top1 = np.array([0, 1, 1, 0])
    m = evaluate(Predictions(top1, top1[:, None], 5), labels, 3)["metrics"]
    assert m["empty_clusters"] == 3


def test_nmi_ari_match_sklearn_definitions():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(0)
    labels, top1 = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
    m = evaluate(Predictions(top1, top1[:, None], 7), labels, 5)["metrics"]
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(labels, top1))
    assert m["ari"] == pytest.approx(adjusted_rand_score(labels, top1))


def test_label_sets_top1_and_top5():
    labels = np.array([0, 1, 2, 3])
    # Identity mapping from top1 == labels except sample 3 predicted as cluster 0.
    top1 = np.array([0, 1, 2, 0])
    sets = LabelSets.from_class_sets(labels, [[0], [1, 0], [2], [3, 0]])  # class 3's set holds 0
    topk = np.stack([top1, np.array([1, 0, 2, 3])], axis=1)
    m = evaluate(Predictions(top1, topk, 4), labels, 4, label_sets=sets)["metrics"]
    # Mapping: c0->0, c1->1, c2->2, c3 unmatched (no top1 hits); sample 3 is wrong top1->1.
    assert m["acc"] == pytest.approx(3 / 4)
    assert m["top1_L_acc"] == pytest.approx(1.0)  # 0 is in sample 3's set
    assert m["top5_L_acc"] == pytest.approx(1.0)


def test_in_label_sets_handles_empty_sets():
    sets = LabelSets(indptr=np.array([0, 2, 2, 3]), indices=np.array([4, 5, 6]))
    assert in_label_sets(np.array([5, 5, 6]), sets).tolist() == [True, False, True]


def test_label_sets_expand_per_class():
    sets = LabelSets.from_class_sets(np.array([1, 0, 1]), [[0], [1, 7]])
    assert sets.indptr.tolist() == [0, 2, 3, 5]
    assert sets.indices.tolist() == [1, 7, 0, 1, 7]


def test_calibration_matches_torchmetrics_multiclass():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.standard_normal((500, 6)) * 3)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    # Labels agree with the argmax 70% of the time, so the Hungarian mapping is the identity.
    labels = np.where(rng.random(500) < 0.7, pred.numpy(), rng.integers(0, 6, 500))
    out = evaluate(
        Predictions(pred.numpy(), probs.topk(5, 1).indices.numpy(), 6, conf.numpy()), labels, 6
    )
    expected = multiclass_calibration_error(
        probs, torch.from_numpy(labels), num_classes=6, n_bins=15
    )
    assert out["metrics"]["ece"] == pytest.approx(float(expected), abs=1e-6)
    assert out["metrics"]["mean_confidence"] == pytest.approx(float(conf.mean()))
    rel = out["reliability"]
    assert sum(rel["count"]) == 500 and len(rel["accuracy"]) == 15


def test_perfectly_calibrated_bins():
    conf = np.array([0.95] * 20)
    correct = np.array([1] * 19 + [0])
    labels = np.zeros(20, dtype=int)
    top1 = np.where(correct == 1, 0, 1)
    out = evaluate(Predictions(top1, top1[:, None], 2, conf), labels, 2)
    assert out["metrics"]["ece"] == pytest.approx(0.0, abs=1e-9)
