"""Benchmark views on real (user) stores: wnids map to tree classes, coarse and relabelled label
sets, model-based subsets, ReaL; views are cached and rebuilt when inputs change; bad input files
and parameters fail clearly. Every benchmark end to end on the synthetic stores:
test_every_benchmark.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clusterbench.benchmarks.families import coarse as coarse_module
from clusterbench.benchmarks.families.coarse import coarse
from clusterbench.benchmarks.families.frequency import band
from clusterbench.benchmarks.families.imagenet21k import in21k
from clusterbench.benchmarks.families.leaf import leaf
from clusterbench.benchmarks.families.model_based import random_subset, top_k
from clusterbench.benchmarks.families.real import in1k_real
from clusterbench.benchmarks.families.relabel import relabel
from clusterbench.benchmarks.imagenet21k.timm import in1k_wnids
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.summary import describe
from clusterbench.core.errors import BenchmarkFileError, ConfigError, StoreError
from clusterbench.data.store import FeatureStore
from clusterbench.data.view import SampledLabels
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

# --- real (user) stores ----------------------------------------------------------------------

TREE_IDS = (10, 9, 66, 26, 25, 3000, 5000, 7000)  # 10 -> 9 -> 66 and 26 -> 25: chains


def in21k_store(
    root: Path, ids: tuple[int, ...] = TREE_IDS, classes: list[str] | None = None
) -> Path:
    """8 ImageNet-21K classes, named by wnid in a shuffled order; 6 train, 3 val per class."""
    tree = load_tree()
    train, train_labels = sphere_blobs(6, len(ids), 8, seed=1)
    val, val_labels = sphere_blobs(3, len(ids), 8, seed=1)
    names = classes if classes is not None else [tree.wnids[i] for i in ids]
    return write_store(root, train, train_labels, val, val_labels, classes=names)


def test_real_store_maps_wnids_to_tree_classes(tmp_path: Path) -> None:
    tree = load_tree()
    root = in21k_store(tmp_path / "store")
    view = in21k(base=str(root), cache_dir=str(tmp_path / "c"))
    store = FeatureStore.open(root)
    assert view.num_classes == 10450 and view.train_index is None
    assert np.array_equal(view.train_labels, np.array(TREE_IDS)[store.train.labels])
    sets = view.val_label_sets
    row = int(np.flatnonzero(view.val_labels == 10)[0])
    assert sets.indices[sets.indptr[row] : sets.indptr[row + 1]].tolist() == tree.chain(10)
    assert describe(view)["classes_without_train_samples"] == 10450 - 8


def test_coarse_label_sets_merge_duplicates(tmp_path: Path) -> None:
    tree = load_tree()
    view = coarse(3, base=str(in21k_store(tmp_path / "s")), cache_dir=str(tmp_path / "c"))
    sets, wnids = view.val_label_sets, np.array(view.class_names)

    def labels_of(row: int) -> np.ndarray:
        return sets.indices[sets.indptr[row] : sets.indptr[row + 1]]

    for row in range(len(view.val_labels)):
        got = labels_of(row)
        assert got.size == np.unique(got).size and got[0] == view.val_labels[row]
    # Class 10 (depth 4 > 3) moves one step up to class 9: chain 10, 9, 66, 65, 144 becomes
    # 9, 66, 65, 144 (9 once).
    assert tree.chain(10) == [10, 9, 66, 65, 144] and tree.parent[10] == 9
    store = FeatureStore.open(tmp_path / "s")
    row = int(np.flatnonzero(store.val.labels == TREE_IDS.index(10))[0])
    assert wnids[view.val_labels[row]] == tree.wnids[9]
    assert wnids[labels_of(row)].tolist() == [tree.wnids[i] for i in (9, 66, 65, 144)]


def test_named_features_are_found_by_extractor(tmp_path: Path) -> None:
    in21k_store(tmp_path / "features" / "in21k" / "ibot_vitl")
    overrides = [
        "dataset=coarse_d4",
        "extractor=ibot_vitl",
        f"paths.features_root={tmp_path / 'features'}",
    ]
    cfg = compose_config(
        tmp_path,
        overrides
        + [
            "method.num_clusters=4",
            "method.niter=2",
            "logger=none",
            f"paths.cache_dir={tmp_path / 'c'}",
        ],
    )
    payload = run(cfg, tmp_path / "run")
    assert payload["dataset_summary"]["num_classes"] == 8386
    assert payload["dataset_summary"]["num_train"] == 48
    cfg = compose_config(
        tmp_path, ["dataset=coarse_d4", "extractor=dino_vitb16", f"paths.features_root={tmp_path}"]
    )
    with pytest.raises(
        ConfigError,
        match=f"no features for dataset=coarse_d4 extractor=dino_vitb16 at {tmp_path}/in21k/dino_vitb16",
    ):
        run(cfg, tmp_path / "run2")


# --- caching ---------------------------------------------------------------------------------


def test_views_are_cached_and_rebuilt_when_inputs_change(tmp_path: Path, monkeypatch) -> None:
    root, cache = in21k_store(tmp_path / "store"), tmp_path / "c"
    kw = {"base": str(root), "cache_dir": str(cache)}
    first = coarse(2, **kw)
    assert len(list((cache / "views").iterdir())) == 1

    def boom(*args, **kwargs):
        raise RuntimeError("built again")

    monkeypatch.setattr(coarse_module, "tree_view", boom)
    again = coarse(2, **kw)  # served from the cache: the builder is not called
    assert again.fingerprint == first.fingerprint and again.params == first.params
    for field in ("train_labels", "val_labels"):
        assert np.array_equal(getattr(again, field), getattr(first, field))
    assert np.array_equal(again.val_label_sets.indices, first.val_label_sets.indices)
    assert again.class_names == first.class_names and again.num_classes == first.num_classes
    with pytest.raises(RuntimeError, match="built again"):
        coarse(3, **kw)  # other parameters: another view
    labels = np.load(root / "val_labels.npy")
    np.save(root / "val_labels.npy", labels[::-1].copy())
    with pytest.raises(RuntimeError, match="built again"):
        coarse(2, **kw)  # the store changed: its fingerprint keys a new view


def test_relabel_file_change_builds_a_new_view(tmp_path: Path) -> None:
    root, cache = in21k_store(tmp_path / "store"), tmp_path / "c"
    store = FeatureStore.open(root)
    rel = tmp_path / "relabel"
    rel.mkdir()
    tree_train = np.array(TREE_IDS)[store.train.labels]
    tree_val = np.array(TREE_IDS)[store.val.labels]
    np.save(rel / "train_labels.npy", tree_train)
    np.save(rel / "val_labels.npy", tree_val)
    kw = {"base": str(root), "cache_dir": str(cache), "relabel": str(rel)}
    view = relabel("p_hzr", **kw)
    assert view.num_classes == 8 and view.train_index is None
    # Relabel class 10 to its parent 9 everywhere, and exclude one train sample.
    tree_train = np.where(tree_train == 10, 9, tree_train)
    tree_train[0] = -1
    np.save(rel / "train_labels.npy", tree_train)
    np.save(rel / "val_labels.npy", np.where(tree_val == 10, 9, tree_val))
    view2 = relabel("p_hzr", **kw)
    assert view2.num_classes == 7 and view2.fingerprint != view.fingerprint
    assert len(view2.train_labels) == 47 and view2.train_index[0] == 1


# --- bad input -------------------------------------------------------------------------------


def test_store_labels_beyond_class_list(tmp_path: Path) -> None:
    root = in21k_store(tmp_path / "s", ids=(10, 9, 66), classes=None)
    labels = np.load(root / "train_labels.npy")
    labels[0] = 5
    np.save(root / "train_labels.npy", labels)
    with pytest.raises(
        StoreError, match="train_labels.npy: label 5 is out of range for classes.txt"
    ):
        in21k(base=str(root), cache_dir=str(tmp_path / "c"))
    (root / "classes.txt").unlink()
    labels[0] = 10450
    np.save(root / "train_labels.npy", labels)
    with pytest.raises(
        StoreError, match="label 10450 is out of range for the 10450 ImageNet-21K-P classes"
    ):
        in21k(base=str(root), cache_dir=str(tmp_path / "c"))


def test_unknown_wnids_in_classes_txt(tmp_path: Path) -> None:
    names = [load_tree().wnids[i] for i in TREE_IDS]
    names[3] = "n99999999"
    root = in21k_store(tmp_path / "s", classes=names)
    with pytest.raises(
        StoreError,
        match=r"classes.txt: 1 of 8 class ids are not ImageNet-21K-P classes \(e.g. n99999999\)",
    ):
        coarse(4, base=str(root), cache_dir=str(tmp_path / "c"))
    # A WordNet synset of the tree that is not one of the 10450 classes is unknown too.
    names[3] = load_tree().wnids[-1]
    root = in21k_store(tmp_path / "s2", classes=names)
    with pytest.raises(StoreError, match="are not ImageNet-21K-P classes"):
        in21k(base=str(root), cache_dir=str(tmp_path / "c"))


@pytest.mark.parametrize(
    ("train", "val", "match"),
    [
        (
            np.zeros(47, np.int64),
            np.zeros(24, np.int64),
            r"expected integer labels of shape \(48,\)",
        ),
        (np.zeros(48, np.float32), np.zeros(24, np.int64), "found float32"),
        (np.full(48, 10450), np.zeros(24, np.int64), r"48 labels are outside -1..10449"),
        (np.full(48, -2), np.zeros(24, np.int64), "outside -1..10449"),
        (np.zeros(48, np.int64), None, "missing file .*val_labels.npy"),
    ],
)
def test_bad_relabel_files(tmp_path: Path, train, val, match: str) -> None:
    root = in21k_store(tmp_path / "s")
    rel = tmp_path / "rel"
    rel.mkdir()
    np.save(rel / "train_labels.npy", train)
    if val is not None:
        np.save(rel / "val_labels.npy", val)
    with pytest.raises(BenchmarkFileError, match=match):
        relabel("leaf_hzr", relabel=str(rel), base=str(root), cache_dir=str(tmp_path / "c"))


def test_missing_relabel_and_accuracy_inputs_are_explained(tmp_path: Path) -> None:
    root = in21k_store(tmp_path / "s")
    kw = {"base": str(root), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(ConfigError, match="no relabelling for p_hzr: set dataset.relabel"):
        relabel("p_hzr", **kw)
    with pytest.raises(BenchmarkFileError, match="relabel directory .*nope does not exist"):
        relabel("p_hzr", relabel=str(tmp_path / "nope"), **kw)
    with pytest.raises(ConfigError, match="no per-class accuracies for model 'clip'"):
        top_k("clip", **kw)
    with pytest.raises(BenchmarkFileError, match="accuracy file .*nope.npy does not exist"):
        top_k("clip", accuracy=str(tmp_path / "nope.npy"), **kw)


def _write(path: Path, content) -> Path:
    if path.suffix == ".npy":
        np.save(path, content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("file", "content", "match"),
    [
        ("a.npy", np.zeros(10449), r"shape \(10450,\), found shape \(10449,\)"),
        ("a.npy", np.full(10450, 95.0), r"fractions in \[0, 1\]"),
        ("a.npy", np.array(["x"] * 10450), "expected float accuracies"),
        ("a.json", {"n99999999": 0.5}, "1 keys are not ImageNet-21K classes"),
        ("a.json", [0.5] * 3, r"shape \(10450,\), found shape \(3,\)"),
        ("a.json", ["high"] * 10450, "entry 0 is 'high'"),
        ("a.json", "{not json", "is not valid JSON"),
        ("a.json", 0.5, "expected a JSON list of 10450 accuracies"),
        ("a.csv", "0.5", "expected a .npy or .json"),
    ],
)
def test_bad_accuracy_files(tmp_path: Path, file: str, content, match: str) -> None:
    path = _write(tmp_path / file, content)
    with pytest.raises(BenchmarkFileError, match=match):
        top_k(
            "clip",
            accuracy=str(path),
            base=str(in21k_store(tmp_path / "s")),
            cache_dir=str(tmp_path / "c"),
        )


def test_accuracy_json_by_wnid_selects_top_classes(tmp_path: Path) -> None:
    tree = load_tree()
    acc = {
        tree.wnids[i]: a
        for i, a in zip(TREE_IDS, (0.9, 0.1, 0.95, 0.2, None, 0.99, 0.3, 0.4), strict=True)
    }
    path = _write(tmp_path / "acc.json", acc)
    view = top_k(
        "sup",
        accuracy=str(path),
        k=3,
        base=str(in21k_store(tmp_path / "s")),
        cache_dir=str(tmp_path / "c"),
    )
    assert sorted(view.class_names) == sorted(tree.wnids[i] for i in (10, 66, 3000))
    assert len(view.train_labels) == 18


def in1k_store(root: Path, num_val: int = 10) -> Path:
    """5 ImageNet-1K classes named in reverse standard order; num_val val images."""
    train, train_labels = sphere_blobs(4, 5, 8, seed=3)
    rng = np.random.default_rng(0)
    val, val_labels = (
        rng.standard_normal((num_val, 8)).astype(np.float32),
        rng.integers(0, 5, num_val),
    )
    return write_store(root, train, train_labels, val, val_labels, classes=in1k_wnids()[:5][::-1])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([[1]] * 9, "has 9 entries but the base store has 10 validation images"),
        ([[1]] * 9 + [[1000]], r"class ids must be in 0..999, found 1..1000"),
        ([[1]] * 9 + [["a"]], "class ids must be integers"),
        ({"0": [1]}, "expected a JSON list with one list of class ids"),
        ("[[1], ", "is not valid JSON"),
    ],
)
def test_bad_real_files(tmp_path: Path, content, match: str) -> None:
    path = _write(tmp_path / "real.json", content)
    with pytest.raises(BenchmarkFileError, match=match):
        in1k_real(
            real=str(path), base=str(in1k_store(tmp_path / "s")), cache_dir=str(tmp_path / "c")
        )


def test_in1k_real_view_on_a_real_store(tmp_path: Path) -> None:
    sets = [[4], [], [3, 1], [0], [2, 4, 0], [1], [], [3], [0, 1], [2]]
    path = _write(tmp_path / "real.json", sets)
    root = in1k_store(tmp_path / "s")
    view = in1k_real(real=str(path), base=str(root), cache_dir=str(tmp_path / "c"))
    assert view.evaluation == SampledLabels(repeats=50, seed=0)
    assert view.val_index.tolist() == [0, 2, 3, 4, 5, 7, 8, 9]
    assert len(view.val_label_sets) == 8
    assert view.val_label_sets.indices.tolist() == [4, 3, 1, 0, 2, 4, 0, 1, 3, 0, 1, 2]
    # classes.txt lists the first five wnids in reverse: store label 0 is standard id 4.
    store = FeatureStore.open(root)
    assert np.array_equal(view.train_labels, 4 - store.train.labels)
    assert np.array_equal(view.val_labels, 4 - store.val.labels[view.val_index])


def test_bad_benchmark_parameters(tmp_path: Path) -> None:
    kw = {"base": str(in21k_store(tmp_path / "s")), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(ConfigError, match="dataset.mode='median'"):
        band(5, mode="median", **kw)
    with pytest.raises(ConfigError, match="dataset.depth must be >= 0"):
        coarse(-1, **kw)
    with pytest.raises(ConfigError, match="dataset.rule='tree'"):
        leaf("tree", **kw)
    with pytest.raises(ConfigError, match="dataset.kind='hzr'"):
        relabel("hzr", **kw)
    with pytest.raises(ConfigError, match=r"dataset.k must be in 1..10450, got 0"):
        random_subset(k=0, **kw)
    with pytest.raises(ConfigError, match="unknown dataset.synthetic parameter"):
        in21k(base="synthetic", cache_dir=str(tmp_path / "c"), synthetic={"classes": 5})
