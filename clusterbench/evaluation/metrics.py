"""The paper's clustering metrics, shared by every method.

ACC uses the Hungarian one-to-one mapping between clusters and classes (scipy's
linear_sum_assignment) estimated from the top-1 predictions and reused to map the top-5
(section 4.4). With K clusters and C classes the assignment is rectangular: min(K, C) pairs
are matched; samples in an unmatched cluster count as wrong (so overclustering cannot
inflate ACC), while NMI and ARI compare the raw partitions and need no mapping.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torchmetrics.functional.classification import binary_calibration_error

from clusterbench.data.view import LabelSets
from clusterbench.evaluation.predictions import Predictions

ECE_BINS = 15


def hungarian_mapping(
    top1: np.ndarray, labels: np.ndarray, num_clusters: int, num_classes: int
) -> np.ndarray:
    """(num_clusters,) class assigned to each cluster by maximum-overlap matching, -1 if none."""
    overlap = coo_matrix(
        (np.ones(top1.shape[0], dtype=np.int64), (top1, labels)), shape=(num_clusters, num_classes)
    ).toarray()
    # Only clusters and classes that occur take part: same optimum, far smaller problem.
    rows, cols = np.flatnonzero(overlap.sum(1)), np.flatnonzero(overlap.sum(0))
    r, c = linear_sum_assignment(overlap[np.ix_(rows, cols)], maximize=True)
    mapping = np.full(num_clusters, -1, dtype=np.int64)
    mapping[rows[r]] = cols[c]
    return mapping


def in_label_sets(predicted: np.ndarray, sets: LabelSets) -> np.ndarray:
    """(N,) whether predicted[i] is one of sample i's allowed labels."""
    counts = np.diff(sets.indptr)
    hits = np.repeat(predicted, counts) == sets.indices
    out = np.zeros(predicted.shape[0], dtype=bool)
    nonempty = counts > 0
    out[nonempty] = np.logical_or.reduceat(hits, sets.indptr[:-1][nonempty])
    return out


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per-bin mean confidence, accuracy and count: the data behind a reliability diagram.

    torchmetrics gives the ECE but not its bins, hence this small histogram.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "bin_edges": edges.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": count.tolist(),
    }


def evaluate(
    predictions: Predictions,
    labels: np.ndarray,
    num_classes: int,
    label_sets: LabelSets | None = None,
) -> dict:
    """Metrics dict (fractions in [0, 1]) and the reliability data when confidences exist."""
    labels = np.asarray(labels, dtype=np.int64)
    top1, topk = predictions.top1, predictions.topk
    if top1.shape[0] != labels.shape[0]:
        raise ValueError(f"{top1.shape[0]} predictions for {labels.shape[0]} labels")
    mapping = hungarian_mapping(top1, labels, predictions.num_clusters, num_classes)
    mapped1, mappedk = mapping[top1], mapping[topk]
    correct = mapped1 == labels
    metrics = {
        "acc": float(correct.mean()),
        "nmi": float(normalized_mutual_info_score(labels, top1)),
        "ari": float(adjusted_rand_score(labels, top1)),
        "top5_acc": float((mappedk == labels[:, None]).any(axis=1).mean()),
        "num_clusters": int(predictions.num_clusters),
        "num_classes": int(num_classes),
        "empty_clusters": int(predictions.num_clusters - np.unique(top1).size),
    }
    if label_sets is not None:
        if len(label_sets) != labels.shape[0]:
            raise ValueError(f"{len(label_sets)} label sets for {labels.shape[0]} samples")
        metrics["top1_L_acc"] = float(in_label_sets(mapped1, label_sets).mean())
        hit_k = np.zeros(labels.shape[0], dtype=bool)
        for j in range(mappedk.shape[1]):
            hit_k |= in_label_sets(mappedk[:, j], label_sets)
        metrics["top5_L_acc"] = float(hit_k.mean())
    extras: dict = {}
    if predictions.confidence is not None:
        conf = predictions.confidence
        metrics["mean_confidence"] = float(conf.mean())
        metrics["ece"] = float(
            binary_calibration_error(
                torch.from_numpy(conf),
                torch.from_numpy(correct.astype(np.int64)),
                n_bins=ECE_BINS,
                norm="l1",
            )
        )
        extras["reliability"] = reliability(conf, correct)
    return {"metrics": metrics, **extras}
