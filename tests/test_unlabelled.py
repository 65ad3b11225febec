"""A collection nobody has labelled: stores without labels run every method, every row's cluster
is exported as Parquet, and the label-free scores come with every run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from clusterbench.core.errors import ConfigError, StoreError
from clusterbench.data.store import FeatureStore
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.self_distillation import TINY_RUN
from tests.helpers.stores import easy_store_at

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


def unlabelled_copy(store: Path, to: Path) -> Path:
    """The same features without any label (classes.txt goes too)."""
    shutil.copytree(store, to, ignore=shutil.ignore_patterns("*_labels.npy", "classes.txt"))
    return to


def run_on(tmp_path: Path, store: Path, name: str, *overrides: str) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", *overrides],
    )  # fmt: skip
    return run(cfg, tmp_path / name, QUIET)


@pytest.mark.parametrize(
    "method", [["method=kmeans"], ["method=temi", *TINY_RUN, "trainer.max_epochs=2"]],
    ids=["kmeans", "temi"],
)  # fmt: skip
def test_an_unlabelled_copy_gets_the_labelled_runs_assignments(tmp_path, method, single_thread):
    labelled = easy_store_at(tmp_path / "labelled")
    bare = unlabelled_copy(labelled, tmp_path / "bare")
    graded = run_on(tmp_path, labelled, "a", *method, "method.num_clusters=8")
    blind = run_on(tmp_path, bare, "b", *method, "method.num_clusters=8")
    assert graded["metrics"]["acc"] > 0.5 and set(blind["metrics"]) == {
        "num_clusters"
    }  # 1/8: chance
    assert blind["dataset_summary"]["labelled"] is False
    for split, rows in (("train", 480), ("val", 160)):
        a = pd.read_parquet(tmp_path / "a" / "assignments" / f"{split}.parquet")
        b = pd.read_parquet(tmp_path / "b" / "assignments" / f"{split}.parquet")
        assert len(a) == rows and a["row"].tolist() == list(range(rows))
        assert a["cluster"].tolist() == b["cluster"].tolist()
        assert np.array_equal(np.stack(a["topk"]), np.stack(b["topk"]))
        np.testing.assert_allclose(a["confidence"], b["confidence"], rtol=1e-6)
    # Label-free scores need no labels: the same with and without them.
    assert blind["label_free"] == graded["label_free"]
    lf = blind["label_free"]
    train = pd.read_parquet(tmp_path / "b" / "assignments" / "train.parquet")
    assert lf["cluster_sizes"]["empty_clusters"] == 8 - train["cluster"].nunique()
    assert lf["knn_consistency"]["value"] > 0.5 and lf["silhouette"]["value"] > 0.1


def test_assignments_carry_image_paths_and_confidence(tmp_path):
    store = easy_store_at(tmp_path / "store")
    (store / "train_files.txt").write_text("".join(f"img/{i}.jpg\n" for i in range(480)))
    result = run_on(tmp_path, store, "run", "method=kmeans", "+method.chunk_size=100")
    table = pd.read_parquet(tmp_path / "run" / "assignments" / "train.parquet")
    assert table["path"].tolist()[:2] == ["img/0.jpg", "img/1.jpg"] and len(table) == 480
    assert table["confidence"].between(-1, 1).all()  # cosine to the nearest centroid
    assert (table["cluster"] == np.stack(table["topk"])[:, 0]).all()
    val = pd.read_parquet(tmp_path / "run" / "assignments" / "val.parquet")
    assert "path" not in val.columns  # no val_files.txt
    assert np.load(tmp_path / "run" / "centroids.npy").shape == (8, 16)
    assert result["artefacts"]["assignments"]["train"] == {
        "file": "assignments/train.parquet", "rows": 480}  # fmt: skip


def test_without_labels_the_number_of_clusters_must_be_given(tmp_path):
    bare = unlabelled_copy(easy_store_at(tmp_path / "labelled"), tmp_path / "bare")
    with pytest.raises(ConfigError, match="has no labels, so the number of clusters is not"):
        run_on(tmp_path, bare, "run", "method=kmeans")
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_store_with_only_train_features_runs(tmp_path):
    bare = unlabelled_copy(easy_store_at(tmp_path / "labelled"), tmp_path / "bare")
    (bare / "val.npy").unlink()
    result = run_on(tmp_path, bare, "run", "method=kmeans", "method.num_clusters=8")
    assert list(result["artefacts"]["assignments"]) == ["train"]
    assert result["dataset_summary"]["num_val"] == 0


def test_labels_for_some_splits_only_are_refused(tmp_path):
    store = easy_store_at(tmp_path / "store")
    (store / "val_labels.npy").unlink()
    with pytest.raises(StoreError, match=r"val_labels.npy is missing while .*train_labels.npy"):
        FeatureStore.open(store)


def test_a_file_list_of_another_length_is_refused(tmp_path):
    store = easy_store_at(tmp_path / "store")
    (store / "val_files.txt").write_text("a.jpg\nb.jpg\n")
    with pytest.raises(StoreError, match="val_files.txt lists 2 paths but val.npy has 160 rows"):
        FeatureStore.open(store)


def test_benchmarks_need_labels_and_say_which_file(tmp_path):
    bare = unlabelled_copy(easy_store_at(tmp_path / "labelled"), tmp_path / "bare")
    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "dataset=in1k",
                                    f"dataset.base={bare}", "logger=none"])  # fmt: skip
    with pytest.raises(StoreError, match=r"benchmark in1k needs labels, but .*train_labels.npy"):
        run(cfg, tmp_path / "run", QUIET)


def test_a_failed_export_leaves_no_parquet(tmp_path, monkeypatch):
    from clusterbench.methods.kmeans import SphericalKMeans

    def broken(self, rows, topk=None):
        yield from ()
        raise OSError("disk full")

    monkeypatch.setattr(SphericalKMeans, "assign", broken)
    store = easy_store_at(tmp_path / "store")
    with pytest.raises(OSError, match="disk full"):
        run_on(tmp_path, store, "run", "method=kmeans")
    assert not list((tmp_path / "run").rglob("*.parquet"))
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    "method", [["method=kmeans"], ["method=temi", *TINY_RUN, "trainer.max_epochs=2"],
               ["method=turtle", "method.T=20", "method.steps_per_epoch=10"],
               ["method=kmeans", "refine=self_label", "refine.epochs=2"]],
    ids=["kmeans", "temi", "turtle", "kmeans+self_label"],
)  # fmt: skip
def test_assign_gives_new_rows_the_clusters_the_run_would(tmp_path, method, single_thread):
    """The val rows, saved as a store of their own and assigned later, get exactly the
    clusters the run exported for them."""
    from clusterbench.assign import assign
    from clusterbench.data.store import FeatureStore as Store

    store = easy_store_at(tmp_path / "store")
    run_on(tmp_path, store, "run", *method)
    new = tmp_path / "new"
    new.mkdir()
    np.save(new / "train.npy", Store.open(store).val.features)
    assign(tmp_path / "run", new, None, ["train"])
    later = pd.read_parquet(tmp_path / "run" / "assigned" / "new" / "assignments" / "train.parquet")
    own = pd.read_parquet(tmp_path / "run" / "assignments" / "val.parquet")
    assert later["cluster"].tolist() == own["cluster"].tolist()
    np.testing.assert_allclose(later["confidence"], own["confidence"], rtol=1e-5)


def test_assign_refuses_another_feature_space(tmp_path):
    from clusterbench.assign import assign

    store = easy_store_at(tmp_path / "store")
    run_on(tmp_path, store, "run", "method=kmeans")
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "train.npy", np.ones((10, 32), np.float32))
    with pytest.raises(ConfigError, match="has 32-dimensional features but the run .* 16"):
        assign(tmp_path / "run", other, None, ["train"])
    np.save(other / "train.npy", np.ones((10, 16), np.float32))
    (other / "meta.json").write_text('{"extractor": "clip_vitg"}')
    (store / "meta.json").write_text('{"extractor": "dinov2_vitg"}')
    with pytest.raises(
        ConfigError, match="extracted with 'clip_vitg' but the run .* 'dinov2_vitg'"
    ):
        assign(tmp_path / "run", other, None, ["train"])


@pytest.mark.slow
def test_separability_needs_labels_and_names_the_file(tmp_path):
    from tests.helpers.cli import cli

    bare = unlabelled_copy(easy_store_at(tmp_path / "labelled"), tmp_path / "bare")
    proc = cli("separability", "dataset=custom", f"dataset.path={bare}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        f"error: separability needs labels, but {bare / 'train_labels.npy'} does not exist"
    )


def test_probe_needs_labels_and_names_the_file(tmp_path):
    from clusterbench.producers.probe.run import run as probe_run

    bare = unlabelled_copy(easy_store_at(tmp_path / "labelled"), tmp_path / "bare")
    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "dataset=custom",
                                    f"dataset.path={bare}", "device=cpu"], name="probe")  # fmt: skip
    with pytest.raises(StoreError, match=r"^probe needs labels, but .*train_labels.npy does not"):
        probe_run(cfg, tmp_path / "run", QUIET)


def test_a_bad_predict_split_fails_before_any_work(tmp_path):
    store = easy_store_at(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"predict.splits=\['test'\]: expected train and/or val"):
        run_on(tmp_path, store, "run", "method=kmeans", "predict.splits=[test]")
    assert not (tmp_path / "run").exists() and not (tmp_path / ".cache").exists()
