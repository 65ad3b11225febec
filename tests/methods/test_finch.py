"""FINCH: the hierarchy equals the finch-clust package's, level by level, and `method=finch`
runs, exports its own train partition, and assigns new rows from the run directory."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.metrics import adjusted_rand_score

from clusterbench.assign import assign
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import FeatureRows
from clusterbench.methods.finch import _distinct, first_neighbours, hierarchy
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import easy_store_at, sphere_blobs

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


def package_finch(x: np.ndarray, first: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "pynndescent is not installed": not needed here
        from finch.finch import FINCH
    return FINCH(x, initial_rank=first, verbose=False)


@pytest.mark.parametrize("data", ["digits", "blobs"])
def test_hierarchy_equals_the_finch_clust_package(data, tmp_path):
    if data == "digits":
        from clusterbench.data.datasets import digits

        x = digits(str(tmp_path)).train.to_numpy()
    else:
        x, _ = sphere_blobs(200, 12, 24, seed=3, spread=0.3)
    unit = l2_normalize_rows(x)
    first = first_neighbours(unit)
    ours = hierarchy(FeatureRows(unit), first)
    partitions, sizes, _ = package_finch(unit, first)
    assert ours.sizes == list(sizes) and len(ours.sizes) >= 3
    for level in range(len(sizes)):
        assert adjusted_rand_score(partitions[:, level], ours.labels(level)) == 1.0


def test_hierarchy_reads_rows_in_chunks_and_sums_unit_rows():
    x, _ = sphere_blobs(50, 4, 8, seed=0)
    rows = FeatureRows(x * 7.0)  # scale does not matter: rows are normalised
    tree = hierarchy(rows, first_neighbours(l2_normalize_rows(x)))
    assert tree.counts.sum() == 200
    assert np.allclose(np.linalg.norm(tree.sums, axis=1) <= tree.counts + 1e-6, True)
    with pytest.raises(ConfigError, match="at least 3 rows"):
        hierarchy(FeatureRows(x[:2]), np.array([1, 0]))


def test_distinct_keeps_the_first_distinct_clusters_in_order():
    got = _distinct(np.array([[3, 3, 1, 3, 2], [5, 5, 5, 5, 5]]), 3)
    assert got.tolist() == [[3, 1, 2], [5, 5, 5]]


def run_finch(tmp_path: Path, store: Path, *overrides: str) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", "method=finch", *overrides],
    )  # fmt: skip
    return run(cfg, tmp_path / "run", QUIET)


def test_finch_method_predicts_at_the_closest_level_and_assigns_new_rows(tmp_path):
    store = easy_store_at(tmp_path / "store")  # 8 well-separated classes
    result = run_finch(tmp_path, store)
    info = result["method_info"]
    levels = np.asarray(info["finch_levels"])
    assert info["finch_clusters"] == levels[np.argmin(np.abs(np.log(levels / 8)))]
    assert result["metrics"]["num_clusters"] == info["finch_clusters"]
    assert result["metrics"]["acc"] > 0.9
    run_dir = tmp_path / "run"
    train = pd.read_parquet(run_dir / "assignments" / "train.parquet")
    assert train["cluster"].nunique() == info["finch_clusters"]
    val = pd.read_parquet(run_dir / "assignments" / "val.parquet")
    again = assign(run_dir, store, tmp_path / "again", ["val"])
    assert again["val"]["rows"] == len(val)
    new = pd.read_parquet(tmp_path / "again" / "assignments" / "val.parquet")
    assert (new["cluster"].to_numpy() == val["cluster"].to_numpy()).all()


def test_finch_with_an_estimated_k(tmp_path):
    store = easy_store_at(tmp_path / "store")
    result = run_finch(tmp_path, store, "method.num_clusters=auto", "k_estimation=finch")
    found = result["method_info"]["k_estimation"]
    assert found["estimator"] == "finch" and found["k"] in found["finch_levels"]
    assert result["method_info"]["finch_clusters"] == found["k"]
