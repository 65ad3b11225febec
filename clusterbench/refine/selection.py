"""Which train rows a self-labelling stage keeps (`refine.select`): the most confident share
of each cluster, those above a confidence threshold, or those on which the top heads of a
multi-head method agree once their cluster ids are matched."""

from __future__ import annotations

import math

import numpy as np

from clusterbench.evaluation.metrics import hungarian_mapping


def quantile_rows(
    top1: np.ndarray, confidence: np.ndarray, quantile: float, per_cluster: bool = True
) -> np.ndarray:
    """(N,) bool: the ceil(quantile * n) most confident rows of each cluster (n its rows), or
    of all rows with `per_cluster=False`. Per cluster, every non-empty cluster keeps at least
    one row; ties are broken by row order."""
    n = top1.shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    if not per_cluster:
        order = np.argsort(-confidence, kind="stable")
        keep[order[: math.ceil(quantile * n)]] = True
        return keep
    order = np.lexsort((-confidence, top1))  # by cluster, most confident first
    clusters = top1[order]
    sizes = np.bincount(top1)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # first sorted position of a cluster
    rank = np.arange(n) - first[clusters]
    keep[order] = rank < np.ceil(quantile * sizes[clusters])
    return keep


def threshold_rows(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: confidence above `threshold` (SCAN's self-label rule)."""
    return confidence > threshold


def match_to(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`other`'s cluster ids renamed to `reference`'s: the maximum-overlap (Hungarian) matching
    of the metrics, over the clusters that occur. An id of `other` left unmatched (it has more
    clusters in use) becomes -1, so its rows agree with no cluster of `reference`."""
    k = int(max(reference.max(initial=0), other.max(initial=0))) + 1
    return hungarian_mapping(other, reference, k, k)[other]


def consensus_rows(heads: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows on which every head of `heads` (h, N), its ids matched to head 0's,
    gives the cluster head 0 gives."""
    agree = np.ones(heads.shape[1], dtype=bool)
    for other in heads[1:]:
        agree &= match_to(heads[0], other) == heads[0]
    return agree
