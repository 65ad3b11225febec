"""Choosing K without labels: the criteria are exact, the estimators find a known K on flat and
nested data, and `method.num_clusters=auto` runs end to end with clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.methods.k_estimation import against_levels
from clusterbench.methods.k_estimation.criteria import Groups, calinski_harabasz, silhouette
from clusterbench.methods.k_estimation.search import Candidates, choose
from clusterbench.methods.k_estimation.two_level import flops
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


def nested_blobs(supers: int, per_super: int, n: int, dim: int = 32, seed: int = 0):
    """`supers` well-separated directions, each with `per_super` classes around it."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize_rows(rng.standard_normal((supers, dim)))
    classes = centres.repeat(per_super, 0) + 0.35 * l2_normalize_rows(
        rng.standard_normal((supers * per_super, dim))
    )
    labels = rng.integers(0, supers * per_super, n)
    x = classes[labels] + 0.05 * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def run_auto(tmp_path: Path, store: Path, *overrides: str) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", "method.num_clusters=auto", *overrides],
    )  # fmt: skip
    return run(cfg, tmp_path / "run", QUIET)


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory) -> Path:
    train, train_labels = sphere_blobs(150, 8, 16, seed=1, spread=0.08)
    val, val_labels = sphere_blobs(20, 8, 16, seed=1, spread=0.08)
    return write_store(tmp_path_factory.mktemp("flat"), train, train_labels, val, val_labels)


def test_criteria_equal_scikit_learn_on_grouped_rows():
    """Groups of several rows, merged into clusters: the sums give scikit-learn's numbers."""
    rng = np.random.default_rng(0)
    x = l2_normalize_rows(rng.standard_normal((400, 8)).astype(np.float32))
    group = rng.integers(0, 40, 400)
    mapping = rng.integers(0, 6, 40)
    groups = Groups.of(x, group, 40, sample=400, seed=0)
    labels = mapping[group]
    assert silhouette(groups, mapping, 6) == pytest.approx(
        silhouette_score(x, labels, metric="cosine"), abs=1e-5
    )
    assert calinski_harabasz(groups, mapping, 6) == pytest.approx(
        calinski_harabasz_score(x, labels), rel=1e-5
    )


def test_choose_takes_the_best_or_the_finest_peak_within_tolerance():
    ks = [2, 5, 10, 20, 50, 100, 200]
    scores = [0.1, 0.5, 0.9, 0.6, 0.7, 0.8, 0.2]
    assert choose(ks, scores, 0.0) == 10
    assert choose(ks, scores, 0.15) == 100  # the finer peak within 15 % of the best
    assert choose(ks, scores, 0.05) == 10


def test_candidates_cover_the_bounds_and_refine_between_neighbours():
    grid = Candidates(2, 500, 12)
    ks = grid.grid()
    assert ks[0] == 2 and ks[-1] == 500 and len(ks) == 12
    finer = grid.around(ks[5], ks)
    assert finer and all(ks[4] < k < ks[6] for k in finer) and not set(finer) & set(ks)


def test_two_level_finds_the_classes_of_flat_data(tmp_path, flat_store):
    result = run_auto(tmp_path, flat_store)
    found = result["method_info"]["k_estimation"]
    assert found["estimator"] == "two_level" and found["k_true"] == 8
    assert abs(found["k"] - 8) <= 2  # within 25 %
    assert result["metrics"]["num_clusters"] == found["k"]
    assert found["closest_level"] == "classes"
    assert len(found["candidates"]) == len(found["scores"]) > 5
    assert (tmp_path / "run" / result["artefacts"]["k_estimation_png"]).is_file()
    # The cost model recorded is the one the docs project with: 1200 rows x 16, 60 groups.
    expected = flops(1200, 16, 60, found["candidates"])
    assert (
        found["flops"] == pytest.approx(expected, rel=1e-3)
        and result["timings"]["k_estimation_s"] > 0
    )
    assert (
        flops(10**6, 16, 60, [2]) - flops(10**5, 16, 60, [2]) == 0
    )  # beyond the sample, N is free


def test_two_level_on_nested_data_matches_a_level_and_says_which(tmp_path):
    """4 superclasses of 6 classes: the silhouette finds one of the two levels."""
    train, train_labels = nested_blobs(4, 6, 3000)
    val, val_labels = nested_blobs(4, 6, 300, seed=1)
    store = write_store(tmp_path / "nested", train, train_labels, val, val_labels)
    found = run_auto(tmp_path, store)["method_info"]["k_estimation"]
    levels = {"classes": 24, "superclasses": 4}
    errors = {name: abs(found["k"] - k) / k for name, k in levels.items()}
    assert min(errors.values()) <= 0.25, found["k"]
    assert found["closest_level"] == "classes"  # the only level a custom store knows
    named = against_levels(found["k"], levels)
    assert named["closest_level"] == min(errors, key=errors.get)


@pytest.mark.parametrize("estimator", [["k_estimation=finch"],
                                       ["k_estimation=sweep", "k_estimation.grid=[4,8,16]"]])  # fmt: skip
def test_other_estimators_find_the_flat_classes(tmp_path, flat_store, estimator):
    result = run_auto(tmp_path, flat_store, "method.nredo=5", *estimator)
    found = result["method_info"]["k_estimation"]
    assert abs(found["k"] - 8) <= 2, found
    assert result["metrics"]["num_clusters"] == found["k"] and result["metrics"]["nmi"] > 0.75


def test_auto_runs_on_an_unlabelled_store(tmp_path, flat_store):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(flat_store, bare, ignore=shutil.ignore_patterns("*_labels.npy"))
    result = run_auto(tmp_path, bare)
    found = result["method_info"]["k_estimation"]
    assert "k_true" not in found and abs(found["k"] - 8) <= 2
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["artefacts"]["assignments"]["train"]["rows"] == 1200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["k_estimation.k_min=30", "k_estimation.k_max=10"], "k_min=30 exceeds k_max=10"),
        (["k_estimation.k_min=200"], "two_level needs at least 8040 rows"),
        (["k_estimation=sweep", "k_estimation.grid=[1,4]"], "every K must be >= 2"),
        (["k_estimation=sweep", "k_estimation.grid=[4,800]"], "sweep needs at least 1600 rows"),
        (["k_estimation=finch", "k_estimation.k_min=500"], "no FINCH level has between"),
        (["k_estimation=finch", "k_estimation.level=40"], "k_estimation.level=40"),
        (["method.num_clusters=many"], "expected int or 'auto' or null"),
    ],
)
def test_bad_estimation_settings_fail_in_one_line(tmp_path, flat_store, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_auto(tmp_path, flat_store, *overrides)
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_auto_trains_the_self_distillation_heads_at_the_estimate(tmp_path, flat_store, method):
    from tests.helpers.self_distillation import TINY_RUN

    result = run_auto(tmp_path, flat_store, f"method={method}", *TINY_RUN, "trainer.max_epochs=2")
    found = result["method_info"]["k_estimation"]
    assert result["metrics"]["num_clusters"] == found["k"]
    assert abs(found["k"] - 8) <= 2
