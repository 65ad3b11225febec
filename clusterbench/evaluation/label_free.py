"""Scores of a clustering that need no labels, computed on every run (labelled or not) on the
train split: the split a user of an unlabelled collection has.

- `cluster_sizes`: how evenly the rows spread (entropy of the cluster marginal / log K, empty
  clusters, smallest and largest share): a collapse shows here first.
- `knn_consistency`: the share of each row's k nearest neighbours that fall in its cluster:
  clusters that cut through neighbourhoods score low. Over every row with the run's own kNN
  table when the method mined one; else over a seeded sample of rows, whose exact neighbours
  among all rows are found block by block (never an N x N matrix, nothing cached).
- `silhouette`: cosine silhouette on a seeded sample (scikit-learn), as the separability
  producer measures classes.
- `generalisation`: how well a linear classifier fitted on the run's own top-1 assignments
  predicts them on rows it did not see: mean k-fold cross-validated accuracy on a seeded
  sample (TURTLE's and HUME's selection criterion). TURTLE's `cross_val.py` fits logistic
  regressions; here a ridge classifier in closed form (the same linear model family, no
  learning rate or epochs to tune, and seconds instead of minutes at 50k x 1024), on
  standardised features.
Each score records its settings; a score that cannot be computed (fewer sampled rows than
clusters, one cluster) is skipped with the reason, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import FeatureRows, Rows


@dataclass
class LabelFreeSettings:
    """`label_free:` of the run config; each score can be switched off."""

    cluster_sizes: bool = True
    knn_consistency: bool = True
    knn: int = 10
    knn_sample: int = 2000
    silhouette: bool = True
    silhouette_sample: int = 2000
    generalisation: bool = True
    generalisation_sample: int = 50000
    generalisation_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        from clusterbench.core.config import check_fields

        check_fields(self, "label_free")  # `label_free.knn=ten` fails here, in one line


def cluster_sizes(sizes: np.ndarray) -> dict:
    """Balance of the cluster marginal: 1 = every cluster the same size, 0 = one cluster."""
    k, n = int(sizes.size), int(sizes.sum())
    share = sizes[sizes > 0] / max(n, 1)
    entropy = float(-(share * np.log(share)).sum())
    return {
        "normalized_entropy": entropy / math.log(k) if k > 1 else None,
        "empty_clusters": int((sizes == 0).sum()),
        "smallest_share": float(sizes.min() / max(n, 1)),
        "largest_share": float(sizes.max() / max(n, 1)),
    }


def knn_consistency(
    top1: np.ndarray, table: np.ndarray, queries: np.ndarray | None = None, chunk: int = 1 << 16
) -> dict:
    """Mean share of a row's neighbours in its own cluster. `table` (M, k): the neighbours
    (self excluded) of the rows `queries` (all N rows, in order, when None)."""
    m, k = table.shape
    own = top1 if queries is None else top1[queries]
    agree = 0
    for start in range(0, m, chunk):
        block = np.asarray(table[start : start + chunk])
        agree += int((top1[block] == own[start : start + block.shape[0], None]).sum())
    return {"value": agree / (m * k), "k": int(k), "rows": int(m)}


def sampled_neighbours(
    rows: Rows, k: int, sample: int, seed: int, block: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, (s, k) table): exact cosine neighbours of `sample` seeded rows among all rows,
    self excluded, searched block by block (faiss's `knn_ground_truth`: one flat index per
    block of rows, results merged in a heap; on every GPU faiss sees)."""
    from faiss import METRIC_INNER_PRODUCT
    from faiss.contrib.exhaustive_search import knn_ground_truth

    n = len(rows)
    queries = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    q = l2_normalize_rows(np.asarray(rows.take(queries), dtype=np.float32))
    blocks = (
        l2_normalize_rows(np.asarray(rows.chunk(s, min(s + block, n)), dtype=np.float32))
        for s in range(0, n, block)
    )
    _, found = knn_ground_truth(q, blocks, k + 1, metric_type=METRIC_INNER_PRODUCT)
    table = np.empty((found.shape[0], k), dtype=np.int64)
    for i, (row, query) in enumerate(zip(found, queries, strict=True)):
        table[i] = row[row != query][:k]  # the row itself out (or the last, when a twin won)
    return queries, table


def silhouette(rows: Rows, top1: np.ndarray, sample: int, seed: int) -> dict:
    """Cosine silhouette of a seeded sample of rows under their clusters."""
    from sklearn.metrics import silhouette_score

    n = len(rows)
    pick = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    labels = top1[pick]
    found = np.unique(labels).size
    if not 2 <= found < pick.size:
        return {"value": None, "sample": int(pick.size), "skipped": (
            f"{found} clusters among {pick.size} sampled rows; silhouette needs 2 to "
            f"{pick.size - 1}")}  # fmt: skip
    x = l2_normalize_rows(np.asarray(rows.take(pick), dtype=np.float32))
    value = silhouette_score(x, labels, metric="cosine")
    return {"value": float(value), "sample": int(pick.size), "metric": "cosine"}


def generalisation(
    rows: Rows, top1: np.ndarray, num_clusters: int, sample: int, folds: int, seed: int,
    alpha: float = 1.0, chunk: int = 8192,
) -> dict:  # fmt: skip
    """Mean k-fold accuracy of ridge classifiers (scikit-learn's RidgeClassifier: one-vs-all
    targets in {-1, 1}, penalty `alpha`, an intercept) predicting the clusters of rows they
    were not fitted on. Closed form: one (D+1)^2 Gram matrix and one (D+1) x K cross product
    per fold, from sums over the sample, so 50k rows of 1024 dims take seconds on a CPU."""
    n = len(rows)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, min(sample, n), replace=False))
    if pick.size < 2 * folds:
        return {"value": None, "skipped": f"{pick.size} sampled rows for {folds} folds"}
    x = np.asarray(rows.take(pick), dtype=np.float64)
    std = x.std(0)
    x = np.hstack([(x - x.mean(0)) / np.where(std > 0, std, 1.0), np.ones((x.shape[0], 1))])
    y = top1[pick].astype(np.int64)
    fold = rng.permutation(pick.size) % folds
    d = x.shape[1]
    gram = np.zeros((folds, d, d))
    cross = np.zeros((folds, d, num_clusters))  # X^T Y with Y one-vs-all in {-1, 1}
    for f in range(folds):
        xf, yf = x[fold == f], y[fold == f]
        gram[f] = xf.T @ xf
        np.add.at(cross[f].T, yf, 2 * xf)  # + 2 x for the row's own cluster ...
        cross[f] -= xf.sum(0)[:, None]  # ... - x for every cluster
    correct = 0
    penalty = alpha * np.eye(d)
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    for f in range(folds):
        rest = [g for g in range(folds) if g != f]
        w = np.linalg.solve(gram[rest].sum(0) + penalty, cross[rest].sum(0))
        held = np.flatnonzero(fold == f)
        for start in range(0, held.size, chunk):
            part = held[start : start + chunk]
            correct += int(((x[part] @ w).argmax(1) == y[part]).sum())
    return {"value": correct / pick.size, "folds": folds, "sample": int(pick.size),
            "classifier": f"ridge, alpha={alpha}"}  # fmt: skip


def label_free_scores(
    settings: LabelFreeSettings,
    rows: Rows,
    top1: np.ndarray,
    sizes: np.ndarray,
    neighbours=None,
) -> dict:
    """The `label_free` block of results.json; `neighbours(k)` returns the run's own (N, k)
    kNN table when the method mined one (None: a seeded sample's neighbours are found here)."""
    out: dict = {}
    if settings.cluster_sizes:
        out["cluster_sizes"] = cluster_sizes(sizes)
    if settings.knn_consistency:
        if len(rows) <= settings.knn:
            out["knn_consistency"] = {"value": None, "skipped": f"{len(rows)} rows <= k"}
        elif neighbours is not None:
            out["knn_consistency"] = knn_consistency(top1, neighbours(settings.knn))
        else:
            queries, table = sampled_neighbours(
                rows, settings.knn, settings.knn_sample, settings.seed
            )
            out["knn_consistency"] = knn_consistency(top1, table, queries)
    if settings.silhouette:
        out["silhouette"] = silhouette(rows, top1, settings.silhouette_sample, settings.seed)
    if settings.generalisation:
        out["generalisation"] = generalisation(
            rows, top1, int(sizes.size), settings.generalisation_sample,
            settings.generalisation_folds, settings.seed,
        )  # fmt: skip
    return out


def describe_label_free(scores: dict) -> str:
    """One console line of the scores that were computed."""
    parts = []
    if scores.get("cluster_sizes", {}).get("normalized_entropy") is not None:
        parts.append(f"size balance {scores['cluster_sizes']['normalized_entropy']:.3f}")
    named = (("knn_consistency", "kNN consistency"), ("silhouette", "silhouette"),
             ("generalisation", "generalisation"), ("head_agreement", "head agreement"))  # fmt: skip
    for key, label in named:
        value = scores.get(key, {}).get("value")
        if value is not None:
            parts.append(f"{label} {value:.3f}")
    return "label-free (train): " + (", ".join(parts) or "none computed")


HEAD_SCORES = ("size_balance", "knn_consistency", "silhouette", "generalisation")


def partition_scores(x: np.ndarray, top1: np.ndarray, num_clusters: int, table: np.ndarray,
                     seed: int) -> dict[str, float | None]:  # fmt: skip
    """The label-free scores of one partition of the sampled rows `x` (S, D), for choosing
    among several (the heads of one run); `table` (S, k): each row's neighbours in the sample."""
    rows = FeatureRows(x)
    sizes = np.bincount(top1, minlength=num_clusters)
    return {
        "size_balance": cluster_sizes(sizes)["normalized_entropy"],
        "knn_consistency": knn_consistency(top1, table)["value"],
        "silhouette": silhouette(rows, top1, len(rows), seed)["value"],
        "generalisation": generalisation(rows, top1, num_clusters, len(rows), 5, seed)["value"],
    }
