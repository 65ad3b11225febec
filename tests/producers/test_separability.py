"""Class separability: chunked metrics equal scikit-learn's, a run records what it measured,
and Figure 4's fit reports scipy's R²."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import linregress
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from clusterbench.core.config import build
from clusterbench.core.errors import ConfigError
from clusterbench.producers.separability.metrics import (
    davies_bouldin,
    l_align,
    silhouette,
    silhouette_rows,
)
from clusterbench.producers.separability.run import run
from clusterbench.report import figure4 as plot
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes, a singleton class and a duplicated row (edge cases of both scores)."""
    x, y = sphere_blobs(40, 6, 8, seed=3, spread=0.6)
    x = np.concatenate([x, x[:1], np.full((1, 8), 0.3, np.float32)])
    y = np.concatenate([y, y[:1], [6]])
    return x.astype(np.float64), y


@pytest.mark.parametrize("chunk", [1 << 24, 7])
def test_davies_bouldin_and_silhouette_equal_scikit_learn(data, chunk: int) -> None:
    x, y = data
    for features in (unit(x), x):  # normalize: l2 and none
        t, labels = torch.from_numpy(features), torch.from_numpy(y)
        assert (
            abs(davies_bouldin(t, labels, max_elements=chunk) - davies_bouldin_score(features, y))
            < 1e-6
        )
        assert abs(silhouette(t, labels, max_elements=chunk) - silhouette_score(features, y)) < 1e-6
    # labels need not be 0..K-1 (only the classes present count, as in scikit-learn)
    gappy = torch.from_numpy(y * 7 + 3)
    assert abs(davies_bouldin(torch.from_numpy(x), gappy) - davies_bouldin_score(x, y)) < 1e-6


def test_scores_are_undefined_for_a_single_class() -> None:
    x = torch.randn(10, 3, dtype=torch.float64)
    labels = torch.zeros(10, dtype=torch.int64)
    assert np.isnan(davies_bouldin(x, labels)) and np.isnan(silhouette(x, labels))


def _direct_l_align(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Brute force: scikit-learn's cosine kNN, same-label pairs, mean squared distance."""
    f = unit(x)
    found = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(f).kneighbors(f)[1][:, 1:]
    same = y[found] == y[:, None]
    d2 = ((f[found] - f[:, None]) ** 2).sum(-1)
    return float(d2[same].mean())


def test_l_align_chunked_equals_the_direct_mean() -> None:
    x, y = sphere_blobs(20, 4, 6, seed=1, spread=0.4)
    f = unit(x.astype(np.float64))
    found = NearestNeighbors(n_neighbors=6).fit(f).kneighbors(f)[1][:, 1:]
    ours, pairs = l_align(torch.from_numpy(f), torch.from_numpy(y), found, max_elements=13)
    same = y[found] == y[:, None]
    assert pairs == same.sum() < found.size  # some neighbours are false positives
    assert abs(ours - ((f[found] - f[:, None]) ** 2).sum(-1)[same].mean()) < 1e-12


def test_separability_run_records_what_it_measured(tmp_path: Path, single_thread) -> None:
    x, y = sphere_blobs(30, 5, 8, seed=2, spread=0.5)
    store = write_store(tmp_path / "s", x, y, x[:20], y[:20])
    overrides = [
        "dataset=custom",
        f"dataset.path={store}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "separability.silhouette_sample=100",
        "knn.k=5",
        "device=cpu",
    ]
    cfg = compose_config(tmp_path, overrides, name="separability")
    payload = run(cfg, tmp_path / "run")
    m, info = payload["metrics"], payload["method_info"]
    sample = silhouette_rows(150, 100, seed=0)
    f = unit(x.astype(np.float64))
    assert info["silhouette_sample"] == 100 and sample.size == 100
    assert abs(m["silhouette"] - silhouette_score(f[sample], y[sample])) < 1e-6
    assert abs(m["davies_bouldin"] - davies_bouldin_score(f, y)) < 1e-6
    assert abs(m["l_align"] - _direct_l_align(x.astype(np.float64), y, 5)) < 1e-6
    assert info["split"] == "train" and info["k"] == 5
    assert info["distance"] == "euclidean on L2-normalised features"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == "separability" and saved["metrics"]["l_align"] == m["l_align"]
    # the kNN table came from (and went into) the shared cache: a second run reuses it
    again = run(cfg, tmp_path / "run2")
    assert again["method_info"]["knn_from_cache"] and again["metrics"] == m


def test_separability_of_the_val_split_raw_features(tmp_path: Path, single_thread) -> None:
    x, y = sphere_blobs(12, 3, 6, seed=5, spread=0.5)
    x = 3 * x  # raw norms far from 1: normalize=none must not use the unit rows
    store = write_store(tmp_path / "s", x[:20], y[:20], x, y)
    overrides = [
        "dataset=custom",
        f"dataset.path={store}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "separability.split=val",
        "separability.normalize=none",
        "knn.k=4",
        "device=cpu",
    ]
    payload = run(compose_config(tmp_path, overrides, name="separability"), tmp_path / "run")
    m = payload["metrics"]
    raw = x.astype(np.float64)
    assert abs(m["davies_bouldin"] - davies_bouldin_score(raw, y)) < 1e-6
    assert abs(m["silhouette"] - silhouette_score(raw, y)) < 1e-6
    assert abs(m["l_align"] - _direct_l_align(raw, y, 4)) < 1e-6
    assert payload["method_info"]["distance"] == "euclidean"


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    for override, match in (
        ("separability.split=test", "separability.split='test'"),
        ("separability.normalize=cosine", "expected l2 or none"),
        ("separability.silhouette_sample=2.5", r"silhouette_sample=2.5 \(float\): expected int"),
    ):
        cfg = compose_config(tmp_path, [override], name="separability")
        with pytest.raises(ConfigError, match=match):
            build(cfg.separability)


def _result(path: Path, method: str, dataset: str, metrics: dict) -> None:
    path.mkdir(parents=True)
    payload = {"method": method, "dataset": dataset, "seed": 0, "metrics": metrics}
    (path / "results.json").write_text(json.dumps({**payload, "dataset_summary": {"store": "s"}}))


def test_figure4_fits_each_metric_against_probe_accuracy(tmp_path: Path) -> None:
    acc = {"a": 0.50, "b": 0.62, "c": 0.81, "d": 0.95}
    rng = np.random.default_rng(0)
    truth = {}
    for name, a in acc.items():
        sep = {
            "l_align": 1.2 - a + 0.01 * rng.standard_normal(),
            "davies_bouldin": 4.0 - 3 * a + 0.05 * rng.standard_normal(),
            "silhouette": a / 2 + 0.02 * rng.standard_normal(),
        }
        truth[name] = sep
        _result(tmp_path / "r" / name / "probe", "probing", name, {"acc": a})
        _result(tmp_path / "r" / name / "sep", "separability", name, sep)
    _result(tmp_path / "r" / "lonely" / "sep", "separability", "lonely", truth["a"])  # no probe
    out, fits = tmp_path / "fig.png", tmp_path / "fits.json"
    assert plot.main([str(tmp_path / "r"), "--out", str(out), "--json", str(fits)]) == 0
    assert out.stat().st_size > 10_000
    saved = json.loads(fits.read_text())
    assert [p["dataset"] for p in saved["points"]] == ["a", "b", "c", "d"]
    for metric in ("l_align", "davies_bouldin", "silhouette"):
        line = linregress(list(acc.values()), [truth[n][metric] for n in acc])
        assert abs(saved["fits"][metric]["r2"] - line.rvalue**2) < 1e-12
        assert saved["fits"][metric]["r2"] > 0.9
    # fewer than three paired benchmarks: no fit, one line
    assert plot.main([str(tmp_path / "r" / "a"), str(tmp_path / "r" / "b")]) == 2
