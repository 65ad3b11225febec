"""The embedded default dataset: deterministic, hierarchical, long-tailed, and hard for k-means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clusterbench.core.errors import ConfigError
from clusterbench.data.datasets import synthetic
from clusterbench.data.synthetic import SyntheticSpec, generate, materialize
from clusterbench.evaluation.metrics import evaluate
from clusterbench.methods.kmeans import SphericalKMeans
from clusterbench.methods.task import ClusteringTask

SMALL = dict(num_classes=12, num_superclasses=3, num_train=1200, num_val=300, dim=16)


def test_deterministic_by_seed():
    a, b = generate(SyntheticSpec(**SMALL, seed=3)), generate(SyntheticSpec(**SMALL, seed=3))
    c = generate(SyntheticSpec(**SMALL, seed=4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_long_tail_and_hierarchy():
    arrays = generate(SyntheticSpec(**SMALL, imbalance=10.0))
    counts = np.bincount(arrays["train_labels"], minlength=12)
    assert counts.sum() == 1200 and counts.min() >= 1
    assert 7 <= counts.max() / counts.min() <= 13  # ratio ~ imbalance, up to rounding
    supers = arrays["superclasses"]
    assert supers.shape == (12,) and set(supers) == {0, 1, 2}
    # Superclasses are meaningful: class means are closer within a superclass than across.
    means = np.stack([arrays["train"][arrays["train_labels"] == c].mean(0) for c in range(12)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    same = supers[:, None] == supers[None]
    np.fill_diagonal(same, False)
    assert dist[same].mean() < 0.5 * dist[~same & ~np.eye(12, dtype=bool)].mean()


def test_materialize_is_cached(tmp_path):
    spec = SyntheticSpec(**SMALL)
    path = materialize(spec, tmp_path)
    stamp = (path / "train.npy").stat().st_mtime_ns
    assert materialize(spec, tmp_path) == path
    assert (path / "train.npy").stat().st_mtime_ns == stamp
    assert materialize(SyntheticSpec(**{**SMALL, "seed": 1}), tmp_path) != path


def test_bad_parameters_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="num_train=5 is smaller than num_classes=12"):
        synthetic(str(tmp_path), **{**SMALL, "num_train": 5})
    with pytest.raises(ConfigError, match="unknown synthetic dataset parameter"):
        synthetic(str(tmp_path), colour="red")


@pytest.mark.slow
def test_default_is_far_below_the_linear_probe(cache_dir, tmp_path):
    """The default leaves later methods room: k-means ACC well under a linear probe's."""
    view = synthetic(str(cache_dir))  # the defaults of conf/dataset/synthetic.yaml
    assert view.num_classes == 100 and view.val_label_sets is not None
    train, val = view.train.to_numpy(), view.val.to_numpy()
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    val /= np.linalg.norm(val, axis=1, keepdims=True)
    probe = (
        LogisticRegression(max_iter=300, C=10)
        .fit(train, view.train_labels)
        .score(val, view.val_labels)
    )
    task = ClusteringTask(
        view=view,
        num_clusters=100,
        seed=0,
        device="cpu",
        run_dir=tmp_path,
    )
    acc = evaluate(SphericalKMeans().fit_predict(task), view.val_labels, 100)["metrics"]["acc"]
    assert probe > 0.95
    assert acc < probe - 0.25
