"""Paper benchmarks as views on the tiny synthetic stores: every config runs k-means end to end,
the stores hold what the views need, and `python -m clusterbench.benchmarks` describes a view.
The views on real (user) stores, caching and bad input files: test_families.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clusterbench.benchmarks.families.coarse import coarse
from clusterbench.benchmarks.families.imagenet1k import in1k_odd
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.imagenet21k.world import (
    SyntheticIn1kSpec,
    SyntheticIn21kSpec,
    make_spec,
    materialize_in1k,
    materialize_in21k,
)
from clusterbench.core.config import CONFIG_DIR
from clusterbench.data.spaces import build_view
from clusterbench.data.store import FeatureStore
from clusterbench.run import run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_config
from tests.helpers.synthetic import TINY_IN21K

TINY = {"in21k": TINY_IN21K, "in1k": {"train_per_class": 3, "dim": 16}}
MODULE = "clusterbench.benchmarks"  # the inspection CLI
BENCHMARKS = sorted(
    p.stem
    for p in (Path(CONFIG_DIR) / "dataset").glob("*.yaml")
    if p.stem not in {"synthetic", "digits", "custom"}
)
# Class counts that hold on any store with every class present: fixed by the tree or by k.
EXACT = {
    "in21k": 10450,
    "synthetic_in21k": 10450,
    **{
        f"coarse_d{d}": n
        for d, n in zip(
            range(1, 10), (3987, 5086, 6772, 8386, 9429, 9997, 10241, 10351, 10424), strict=True
        )
    },
    "in21k_leaf": 8153,
    "wordnet_leaf": 7353,
    "leaf_hzr": 8153,
    **{f"{m}_1k": 1000 for m in ("clip", "dinov2", "sup", "random")},
    **{name: 1000 for name in ("in1k", "in1k_odd", "in1k_real")},
}
LABEL_SET_VIEWS = {"in1k_real"} | {b for b in BENCHMARKS if not b.startswith("in1k")}


def family(name: str) -> str:
    return "in1k" if name.startswith("in1k") else "in21k"


def tiny_overrides(name: str, cache: Path) -> list[str]:
    spec = TINY[family(name)]
    return [f"paths.cache_dir={cache}", *(f"dataset.synthetic.{k}={v}" for k, v in spec.items())]


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic ImageNet-21K and ImageNet-1K stores, generated once per session."""
    cache = tmp_path_factory.getbasetemp() / "bench_cache"
    materialize_in21k(make_spec(SyntheticIn21kSpec, TINY["in21k"]), cache)  # type: ignore[arg-type]
    materialize_in1k(make_spec(SyntheticIn1kSpec, TINY["in1k"]), cache)  # type: ignore[arg-type]
    return cache


# --- every benchmark, end to end -------------------------------------------------------------


def test_every_paper_benchmark_has_a_config() -> None:
    expected = {"in1k", "in1k_odd", "in1k_real", "in21k", "in21k_leaf", "wordnet_leaf"}
    expected |= {"tiny", "small", "base", "large", "huge", "imbalanced_2k", "centered_2k"}
    expected |= {f"coarse_d{d}" for d in range(1, 10)} | {"leaf_hzr", "p_hzr"}
    expected |= {"clip_1k", "dinov2_1k", "sup_1k", "random_1k", "union_1k", "synthetic_in21k"}
    assert expected <= set(BENCHMARKS)


def saved_labels(cfg) -> np.ndarray:
    """The val labels of the view a composed config builds."""
    return build_view(cfg.dataset).val_labels


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_kmeans_end_to_end(name: str, bench_cache: Path, tmp_path: Path) -> None:
    overrides = [f"dataset={name}", "method=kmeans", "method.niter=2", "logger=none"]
    # 32 clusters keep the Hungarian matching small; the label space stays the benchmark's.
    cfg = compose_config(
        tmp_path, overrides + ["method.num_clusters=32"] + tiny_overrides(name, bench_cache)
    )
    payload = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    summary = saved["dataset_summary"]
    assert summary["num_classes"] == EXACT.get(name, summary["num_classes"]) > 0
    assert summary["num_train"] >= 32 and summary["num_val"] > 0
    # 32 clusters match at most 32 classes: ACC is bounded by the 32 largest classes' share.
    counts = np.sort(np.bincount(np.asarray(saved_labels(cfg))))[::-1]
    assert 1 / counts.sum() <= payload["metrics"]["acc"] <= counts[:32].sum() / counts.sum()
    if name in LABEL_SET_VIEWS:
        assert payload["metrics"]["top1_L_acc"] >= payload["metrics"]["acc"]
    if name == "in1k_real":  # mapping from one sampled ReaL label, repeated (section 4.4)
        assert payload["metrics"]["real_repeats"] == 50 and "acc_std" in payload["metrics"]


def test_configs_reuse_the_session_stores(bench_cache: Path) -> None:
    """Config defaults + tiny overrides name exactly the fixture's stores: no regeneration."""
    assert len(list((bench_cache / "synthetic_in21k").iterdir())) == 1
    assert len(list((bench_cache / "synthetic_in1k").iterdir())) == 1


def test_full_cluster_count_on_a_model_based_subset(bench_cache: Path, tmp_path: Path) -> None:
    name = "clip_1k"
    cfg = compose_config(
        tmp_path,
        [f"dataset={name}", "method.niter=2", "logger=none", *tiny_overrides(name, bench_cache)],
    )
    metrics = run(cfg, tmp_path / "run")["metrics"]
    assert metrics["num_clusters"] == metrics["num_classes"] == 1000
    assert metrics["top1_L_acc"] >= metrics["acc"] > 0.05


def test_synthetic_in21k_store_has_every_class(bench_cache: Path) -> None:
    tree = load_tree()
    root = next((bench_cache / "synthetic_in21k").iterdir())
    store = FeatureStore.open(root)
    assert store.classes == list(tree.class_wnids)
    for split, size in (("train", 26125), ("val", 10450)):
        labels = store.split(split).labels
        assert labels.size == size and np.bincount(labels, minlength=10450).min() >= 1
        for kind in ("leaf_hzr", "p_hzr"):
            new = np.load(root / "relabel" / kind / f"{split}_labels.npy")
            assert new.shape == labels.shape and new.min() >= 0 and new.max() < 10450
    counts = np.bincount(store.train.labels)
    assert counts.max() / counts.min() >= 4  # long-tailed even at 2.5 samples per class
    acc = np.load(root / "probe_accuracy" / "clip.npy")
    assert acc.shape == (10450,) and 0 <= acc.min() and acc.max() <= 1


def test_coarse_labels_are_meaningful_on_the_synthetic_store(bench_cache: Path) -> None:
    """Class means follow the tree: a sample is nearer its coarse class's mean than others'."""
    kw = {"base": "synthetic", "cache_dir": str(bench_cache), "synthetic": TINY["in21k"]}
    view = coarse(1, **kw)
    x = view.train.to_numpy()
    means = np.zeros((view.num_classes, x.shape[1]))
    np.add.at(means, view.train_labels, x)
    means /= np.bincount(view.train_labels, minlength=view.num_classes)[:, None]
    val = view.val.to_numpy()
    d2 = (val**2).sum(1)[:, None] - 2 * val @ means.T + (means**2).sum(1)[None]
    assert (d2.argmin(1) == view.val_labels).mean() > 0.3  # chance: 1 / 3987


# --- the inspection CLI ----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_prints_summary_and_json_last(bench_cache: Path, tmp_path: Path) -> None:
    spec = [f"dataset.synthetic.{k}={v}" for k, v in TINY["in21k"].items()]
    out = tmp_path / "out"
    proc = cli(
        "dataset=coarse_d1",
        *spec,
        f"hydra.run.dir={out}",
        module=MODULE,
        cwd=tmp_path,
        CLUSTERBENCH_CACHE=str(bench_cache),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    info = json.loads(lines[-1])
    assert info["name"] == "coarse_d1" and info["num_classes"] == 3987
    assert info["num_train"] == 26125 and info["num_val"] == 10450
    assert 0 < info["non_dataset_synset_fraction"] < 1
    assert {"min", "median", "max"} == set(info["train_class_frequency"])
    assert info["imbalance_ratio"] >= 1
    assert json.loads((out / "benchmark.json").read_text()) == info
    assert any(line.startswith("classes") and "3,987" in line for line in lines)


@pytest.mark.slow
def test_cli_reports_bad_base_as_one_line(bench_cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = cli(
        "dataset=tiny",
        f"dataset.base={missing}",
        f"hydra.run.dir={tmp_path / 'o'}",
        module=MODULE,
        cwd=tmp_path,
        CLUSTERBENCH_CACHE=str(bench_cache),
    )
    assert proc.returncode == 2
    assert f"dataset.base={missing} is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# --- a view on the synthetic ImageNet-1K store -----------------------------------------------


def test_in1k_odd_halves_odd_classes_only(bench_cache: Path) -> None:
    view = in1k_odd(seed=0, base="synthetic", cache_dir=str(bench_cache), synthetic=TINY["in1k"])
    counts = np.bincount(view.train_labels, minlength=1000)
    assert (counts[0::2] == 3).all() and (counts[1::2] == 1).all()
    assert len(view.val_labels) == 50000 and view.val_index is None
    other = in1k_odd(seed=1, base="synthetic", cache_dir=str(bench_cache), synthetic=TINY["in1k"])
    assert not np.array_equal(other.train_index, view.train_index)
