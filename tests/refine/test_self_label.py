"""`refine=self_label`: the confident-row rules, the classifier's streaming, whole runs after
k-means and TEMI with before/after metrics, the collapse guard, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.refine.classifier import class_weights, train_classifier
from clusterbench.refine.selection import consensus_rows, match_to, quantile_rows
from clusterbench.refine.self_label import SelfLabel
from clusterbench.run import run
from tests.helpers.compose import compose_config

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115
TINY_HEADS = [
    "method.num_heads=4",
    "method.batch_size=64",
    "method.knn=5",
    "method.hidden_dim=32",
    "method.bottleneck_dim=16",
    "method.base_lr=1e-3",
    "method.teacher_momentum=0.9",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


def run_on(tmp_path: Path, store: Path, *overrides: str) -> tuple[dict, Path]:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", *overrides],
    )  # fmt: skip
    out = tmp_path / "run"
    run(cfg, out, QUIET)
    return json.loads((out / "results.json").read_text()), out


# ---------------------------------------------------------------------------- rules


def test_quantile_keeps_the_most_confident_share_of_each_cluster():
    top1 = np.array([0, 0, 0, 0, 1, 1, 2])
    confidence = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.05])
    kept = quantile_rows(top1, confidence, 0.5)
    # cluster 0: 2 of 4 (0.9, 0.7); cluster 1: 1 of 2 (0.3); cluster 2: its only row
    assert kept.tolist() == [False, True, False, True, False, True, True]
    everywhere = quantile_rows(top1, confidence, 0.5, per_cluster=False)
    assert everywhere.tolist() == [False, True, True, True, False, True, False]  # ceil(3.5)
    assert quantile_rows(top1, confidence, 1.0).all()


def test_consensus_matches_cluster_ids_before_comparing():
    rng = np.random.default_rng(0)
    best = rng.integers(0, 6, 500)
    renamed = np.array([3, 5, 0, 1, 4, 2])[best]  # the same partition, other ids
    assert np.array_equal(match_to(best, renamed), best)
    noisy = renamed.copy()
    noisy[:50] = (noisy[:50] + 1) % 6  # 50 rows moved to another cluster
    agree = consensus_rows(np.stack([best, renamed, noisy]))
    assert not agree[:50].any() and agree[50:].all()


def test_class_weights_balance_the_kept_clusters():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0, 0.0])


class CountingRows(FeatureRows):
    """Rows that remember the largest block read at once."""

    largest = 0

    def take(self, rows):
        CountingRows.largest = max(CountingRows.largest, len(rows))
        return super().take(rows)

    def chunk(self, start, stop):
        CountingRows.largest = max(CountingRows.largest, stop - start)
        return super().chunk(start, stop)


def test_the_classifier_reads_batches_and_learns_the_kept_labels():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8)) * 4
    labels = rng.integers(0, 4, 2000)
    x = (centres[labels] + rng.standard_normal((2000, 8))).astype(np.float32)
    rows = CountingRows(x)
    settings = SelfLabel(epochs=3, batch_size=64, chunk_size=300)
    kept = np.flatnonzero(rng.random(2000) < 0.5)
    model, losses = train_classifier(rows, kept, labels[kept], 4, settings, torch.device("cpu"), 0)
    assert CountingRows.largest <= 300 and len(losses) == 3
    predicted = model.predict(rows, topk=2, chunk=300)
    assert predicted.topk.shape == (2000, 2) and (predicted.top1 == labels).mean() > 0.95
    assert CountingRows.largest <= 300


# ---------------------------------------------------------------------------- whole runs


def test_after_kmeans_results_hold_before_and_after(easy_store, tmp_path):
    saved, out = run_on(tmp_path, easy_store, "refine=self_label", "refine.epochs=5")
    refine = saved["method_info"]["refine"]
    assert refine["selection"] == {"rule": "quantile", "quantile": 0.5, "per_cluster": True}
    assert refine["rows"] == 480 and refine["rows_kept"] == 240
    assert refine["clusters_before"] == refine["clusters_after"] == 8
    assert refine["accepted"] is True and refine["decision"] == "refined"
    assert refine["metrics_before"]["acc"] == 1.0 and refine["metrics_after"]["acc"] == 1.0
    assert saved["metrics"] == refine["metrics_after"]
    assert "mean_confidence" in saved["metrics"]  # the classifier's softmax: calibration too
    assert refine["settings"]["label_smoothing"] == 0.1 and "refine_s" in saved["timings"]
    assert (out / "self_label.pt").exists() and saved["artefacts"]["model"] == "centroids.npy"
    train = pq.read_table(out / "assignments" / "train.parquet").to_pydict()
    assert len(train["cluster"]) == 480 and len(set(train["cluster"])) == 8
    assert all(0 < c <= 1 for c in train["confidence"])


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_after_temi_and_scanv2_the_top_heads_vote(easy_store, tmp_path, method):
    saved, out = run_on(tmp_path, easy_store, f"method={method}", *TINY_HEADS,
                        "refine=self_label", "refine.epochs=5")  # fmt: skip
    refine = saved["method_info"]["refine"]
    heads = refine["selection"]["heads"]
    assert refine["selection"]["rule"] == "consensus" and len(heads) == 4
    assert heads[0] == saved["method_info"]["best_head"] and sorted(heads) == [0, 1, 2, 3]
    assert 0 < refine["rows_kept"] <= 480
    assert set(refine["metrics_before"]) >= {"acc", "nmi"}
    assert set(refine["metrics_after"]) >= {"acc", "nmi"}
    final = refine["metrics_after"] if refine["accepted"] else refine["metrics_before"]
    assert saved["metrics"] == final
    assert (out / "assignments" / "val.parquet").exists()


def test_after_turtle_its_confident_rows_are_refined(easy_store, tmp_path):
    saved, _ = run_on(tmp_path, easy_store, "method=turtle", "method.T=30",
                      "method.steps_per_epoch=10", "refine=self_label", "refine.epochs=5")  # fmt: skip
    refine = saved["method_info"]["refine"]
    assert refine["selection"]["rule"] == "quantile" and 0 < refine["rows_kept"] < 480
    final = refine["metrics_after"] if refine["accepted"] else refine["metrics_before"]
    assert saved["metrics"] == final and set(refine["metrics_before"]) >= {"acc", "nmi"}


def test_after_finch_its_own_partition_is_refined(easy_store, tmp_path):
    saved, out = run_on(tmp_path, easy_store, "method=finch", "refine=self_label")
    refine = saved["method_info"]["refine"]
    assert refine["selection"]["rule"] == "quantile" and refine["rows"] == 480
    assert refine["clusters_before"] == refine["metrics_before"]["num_clusters"]
    final = refine["metrics_after"] if refine["accepted"] else refine["metrics_before"]
    assert saved["metrics"] == final
    assert pq.read_metadata(out / "assignments" / "train.parquet").num_rows == 480


def test_an_unlabelled_store_without_val_rows_is_refined(easy_store, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(easy_store, bare, ignore=shutil.ignore_patterns("*_labels.npy", "classes.txt"))
    (bare / "val.npy").unlink()
    saved, out = run_on(tmp_path, bare, "method.num_clusters=8", "refine=self_label")
    refine = saved["method_info"]["refine"]
    assert refine["accepted"] and refine["metrics_before"] == {"num_clusters": 8}
    assert "pseudo_label_acc_all" not in refine and saved["metrics"] == {"num_clusters": 8}
    assert list(saved["artefacts"]["assignments"]) == ["train"]


def test_the_guard_keeps_the_unrefined_prediction_when_clusters_collapse(easy_store, tmp_path):
    # 1 row kept (0.2 % of 480, over all rows): the classifier knows one cluster only.
    saved, out = run_on(tmp_path, easy_store, "refine=self_label", "refine.quantile=0.002",
                        "refine.per_cluster=false", "refine.epochs=2")  # fmt: skip
    refine = saved["method_info"]["refine"]
    assert refine["rows_kept"] == 1 and refine["clusters_kept"] == 1
    assert refine["clusters_before"] == 8 and refine["clusters_after"] == 1
    assert refine["clusters_lost"] == 7 and refine["accepted"] is False
    assert "unrefined kept: 7 of 8" in refine["decision"]
    assert saved["metrics"] == refine["metrics_before"] and saved["metrics"]["acc"] == 1.0
    assert refine["metrics_after"]["empty_clusters"] == 7
    train = pq.read_table(out / "assignments" / "train.parquet").to_pydict()
    assert len(set(train["cluster"])) == 8  # k-means' own clusters, not the collapsed ones
    assert not (out / "self_label.pt").exists()


class Fixed:
    """A method that is already fitted: given clusters, confidence 0.5 everywhere."""

    name = "fixed"

    def __init__(self, top1: np.ndarray) -> None:
        self.top1 = top1

    def assign(self, rows):
        yield Assigned(0, self.top1[: len(rows), None], np.full(len(rows), 0.5, np.float32))


def test_a_rule_that_keeps_no_row_is_one_clear_error(easy_store, tmp_path):
    from clusterbench.data.datasets import store
    from clusterbench.methods.task import ClusteringTask

    view = store(str(easy_store))
    task = ClusteringTask(view=view, num_clusters=8, seed=0, device="cpu", run_dir=tmp_path)
    method = Fixed(np.arange(480) % 8)
    predictions = Predictions(np.zeros(160), np.zeros(160), 8)
    with pytest.raises(ConfigError, match=r"threshold=0.9\) keeps none of the 480 train rows"):
        SelfLabel(select="threshold", threshold=0.9).refine(method, predictions, {}, task)
    with pytest.raises(ConfigError, match="method fixed has no head"):
        SelfLabel(select="consensus").refine(method, predictions, {}, task)


def test_a_threshold_no_row_passes_writes_nothing(easy_store, tmp_path):
    with pytest.raises(ConfigError, match="keeps none of the 480 train rows of kmeans"):
        run_on(tmp_path, easy_store, "refine=self_label", "refine.select=threshold",
               "refine.threshold=0.9999999")  # fmt: skip
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / "assignments").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "refine.quantile=0",
            r"refine.quantile=0: expected a fraction of rows to keep in \(0, 1\]",
        ),
        ("refine.quantile=1.5", r"refine.quantile=1.5: expected"),
        ("refine.label_smoothing=1.0", r"refine.label_smoothing=1.0: expected \[0, 1\)"),
        ("refine.epochs=0", "refine.epochs=0: expected at least 1 epoch"),
        ("refine.epochs=2.5", r"refine.epochs=2.5 \(float\): expected int"),
        ("refine.select=vote", "refine.select='vote': expected one of"),
        ("refine.max_lost_fraction=2", r"refine.max_lost_fraction=2: expected \[0, 1\]"),
    ],
)
def test_bad_settings_fail_before_any_work(easy_store, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        run_on(tmp_path, easy_store, "refine=self_label", override)
    assert not (tmp_path / "run").exists()


def test_without_refine_the_config_has_no_refine_node(tmp_path):
    cfg = compose_config(tmp_path, ["logger=none"])
    assert "refine" not in cfg
    assert compose_config(tmp_path, ["refine=self_label"]).refine.select == "auto"
    assert not compose_config(tmp_path, ["refine=none"]).refine  # the sweeps' "off"
