"""Spherical k-means on an easy separable case, its bookkeeping and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench.core.errors import ConfigError
from clusterbench.data.datasets import store
from clusterbench.evaluation.metrics import evaluate
from clusterbench.methods.kmeans import SphericalKMeans
from clusterbench.methods.task import ClusteringTask
from clusterbench.run import resolve_num_clusters


def _task(view, k, tmp_path, seed=0):
    return ClusteringTask(
        view=view,
        num_clusters=k,
        seed=seed,
        device="cpu",
        run_dir=tmp_path,
    )


def test_separable_case_is_solved(easy_store, tmp_path):
    view = store(str(easy_store))
    task = _task(view, 8, tmp_path)
    preds = SphericalKMeans(nredo=3).fit_predict(task)
    assert preds.topk.shape == (160, 5) and np.array_equal(preds.top1, preds.topk[:, 0])
    assert evaluate(preds, view.val_labels, 8)["metrics"]["acc"] == 1.0
    assert (
        1 <= task.info["kmeans_iterations_run"] <= task.info["kmeans_iterations_requested"] == 300
    )


def test_same_seed_same_clusters(easy_store, tmp_path):
    view = store(str(easy_store))
    a = SphericalKMeans(niter=5).fit_predict(_task(view, 8, tmp_path, seed=1))
    b = SphericalKMeans(niter=5).fit_predict(_task(view, 8, tmp_path, seed=1))
    assert np.array_equal(a.topk, b.topk)


def test_centroids_are_unit_norm_and_overclustering_works(easy_store, tmp_path):
    view = store(str(easy_store))
    km = SphericalKMeans(niter=10).fit(_task(view, 20, tmp_path))
    assert np.allclose(np.linalg.norm(km.centroids, axis=1), 1.0, atol=1e-5)
    preds = km.predict(view.val)
    assert preds.num_clusters == 20
    m = evaluate(preds, view.val_labels, 8)["metrics"]
    # 20 clusters for 8 classes: the one-to-one matching scores only 8 clusters' rows, so ACC
    # stays below 1 while NMI (which needs no matching) sees that every cluster is pure.
    assert m["nmi"] > 0.8 and 0.3 < m["acc"] < 1.0


def test_num_clusters_checks(easy_store):
    view = store(str(easy_store))
    assert resolve_num_clusters(None, view) == 8
    with pytest.raises(ConfigError, match="at least 2 clusters"):
        resolve_num_clusters(1, view)
    with pytest.raises(ConfigError, match="480 training samples, fewer than num_clusters=1000"):
        resolve_num_clusters(1000, view)
