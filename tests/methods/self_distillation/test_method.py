"""TEMI / SCANv2 through the whole run: results, plots, errors, resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from clusterbench.core.errors import ClusterbenchError, ConfigError, TrainingDiverged
from clusterbench.run import run
from tests.helpers.compose import compose_config

TINY = [
    "method.num_heads=4",
    "method.batch_size=96",
    "method.knn=5",
    "method.hidden_dim=64",
    "method.bottleneck_dim=32",
    "logger=none",
    "trainer.log_every_n_steps=1",
]


def overrides(store: Path, cache: Path, method: str, *extra: str) -> list[str]:
    return [
        f"method={method}",
        "dataset=custom",
        f"dataset.path={store}",
        f"paths.cache_dir={cache}",
        *TINY,
        *extra,
    ]


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_fit_writes_metrics_and_calibration_plots(easy_store, tmp_path, method):
    extra = [
        "trainer.max_epochs=10",
        "method.base_lr=1e-3",
        "method.teacher_momentum=0.9",
        "method.final_teacher_momentum=0.9",
        "method.batch_size=64",
    ]
    cfg = compose_config(tmp_path, overrides(easy_store, tmp_path / "cache", method, *extra))
    out = tmp_path / "run"
    payload = run(cfg, out)
    saved = json.loads((out / "results.json").read_text())
    m = saved["metrics"]
    assert m == payload["metrics"]
    assert m["acc"] >= 0.9, m
    assert 0 < m["mean_confidence"] <= 1 and 0 <= m["ece"] <= 1
    assert (out / "reliability.png").stat().st_size > 0
    assert (out / "confidence_hist.png").stat().st_size > 0
    info = saved["method_info"]
    assert 0 <= info["best_head"] < 4 and len(info["head_losses_last_epoch"]) == 4
    assert info["best_head_loss"] == min(info["head_losses_last_epoch"])
    assert info["epochs"] == 10 and (out / "checkpoints" / "last.ckpt").exists()
    assert len(saved["reliability"]["count"]) == 15


def test_same_seed_same_metrics(easy_store, tmp_path):
    cache = tmp_path / "cache"
    results = []
    for i in range(2):
        cfg = compose_config(
            tmp_path / str(i), overrides(easy_store, cache, "temi", "trainer.max_epochs=2")
        )
        results.append(run(cfg, tmp_path / str(i) / "run")["metrics"])
    assert results[0] == results[1]


class _Crash(Callback):
    """Simulates a job killed after `after` epochs (their checkpoint is already on disk)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.after:
            raise RuntimeError("simulated crash")


def test_resume_after_crash_matches_uninterrupted_run(easy_store, tmp_path):
    cache = tmp_path / "cache"
    args = overrides(easy_store, cache, "temi", "trainer.max_epochs=4")
    straight = run(compose_config(tmp_path / "a", args), tmp_path / "a" / "run")
    crashed_dir = tmp_path / "b" / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_config(tmp_path / "b", args), crashed_dir, callbacks=[_Crash(after=2)])
    assert not (crashed_dir / "results.json").exists()
    assert (crashed_dir / "checkpoints" / "last.ckpt").exists()
    resumed = run(compose_config(tmp_path / "b", args), crashed_dir)
    assert resumed["method_info"]["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == straight["metrics"]
    assert (
        resumed["method_info"]["head_losses_last_epoch"]
        == straight["method_info"]["head_losses_last_epoch"]
    )


def test_checkpoint_of_another_dimension_is_refused(easy_store, tmp_path):
    cache = tmp_path / "cache"
    first = tmp_path / "run"
    run(
        compose_config(tmp_path, overrides(easy_store, cache, "temi", "trainer.max_epochs=1")),
        first,
    )
    cfg = compose_config(
        tmp_path,
        overrides(
            easy_store,
            cache,
            "temi",
            "trainer.max_epochs=1",
            f"method.resume={first / 'checkpoints' / 'last.ckpt'}",
            "method.num_clusters=5",
        ),
    )
    with pytest.raises(ConfigError, match="num_clusters: 8 there, 5 here"):
        run(cfg, tmp_path / "other")


def test_a_batch_larger_than_the_data_is_clipped_to_it(easy_store, tmp_path):
    extra = ["method.batch_size=100000", "trainer.max_epochs=2"]
    cfg = compose_config(tmp_path, overrides(easy_store, tmp_path / "cache", "temi", *extra))
    info = run(cfg, tmp_path / "run")["method_info"]
    assert info["batch_size"] == 480 and info["batch_size_requested"] == 100000
    assert info["steps"] == 2  # one full batch per epoch


@pytest.mark.parametrize(
    "extra,message",
    [
        (["method.batch_size=0"], "method.batch_size=0 must be >= 1"),
        (["method.knn=480"], "method.knn=480 must be in"),
        (["method.num_clusters=1"], "at least 2 clusters"),
    ],
)
def test_bad_settings_are_reported(easy_store, tmp_path, extra, message):
    cfg = compose_config(tmp_path, overrides(easy_store, tmp_path / "cache", "temi", *extra))
    with pytest.raises(ClusterbenchError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_nan_loss_stops_with_epoch_and_step(easy_store, tmp_path, monkeypatch):
    from clusterbench.methods.self_distillation.module import SelfDistillationClustering

    original = SelfDistillationClustering.head_losses

    def poisoned(self, anchors, neighbours):
        losses = original(self, anchors, neighbours)
        return losses * torch.nan if self.global_step == 3 else losses

    monkeypatch.setattr(SelfDistillationClustering, "head_losses", poisoned)
    cfg = compose_config(
        tmp_path, overrides(easy_store, tmp_path / "cache", "scanv2", "trainer.max_epochs=3")
    )
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 0, step 3"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_out_of_memory_names_the_knobs(easy_store, tmp_path, monkeypatch):
    from lightning.pytorch import Trainer

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(Trainer, "fit", oom)
    cfg = compose_config(tmp_path, overrides(easy_store, tmp_path / "cache", "scanv2"))
    with pytest.raises(ClusterbenchError, match="lower method.batch_size, set method.head_chunk"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_label_free_score_can_choose_the_head(tmp_path, single_thread):
    """`method.head_selection=generalisation`: every head scored on one sample, the best one
    predicts, and results.json keeps the scores and the head the loss would have chosen."""
    import numpy as np
    from rich.console import Console

    from clusterbench.run import run
    from tests.helpers.compose import compose_config
    from tests.helpers.self_distillation import TINY_RUN
    from tests.helpers.stores import easy_store_at

    store = easy_store_at(tmp_path / "store")
    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "dataset=custom",
                                    f"dataset.path={store}", "method=temi", *TINY_RUN,
                                    "method.num_heads=3", "trainer.max_epochs=2",
                                    "method.head_selection=generalisation"])  # fmt: skip
    info = run(cfg, tmp_path / "run", Console(file=open("/dev/null", "w")))["method_info"]  # noqa: SIM115
    chosen = info["head_selection"]
    values = [s["generalisation"] for s in chosen["scores"]]
    assert len(values) == 3 and chosen["chosen"] == int(np.argmax(values)) == info["best_head"]
    assert chosen["by"] == "generalisation" and 0 <= chosen["lowest_loss_head"] < 3
