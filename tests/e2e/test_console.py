"""A training run's console: each library line once, no advertisements, and the whole run's
remaining time in the bar and in the log."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from clusterbench.core.progress import RunClock, RunProgressBar, format_duration
from tests.helpers.cli import cli
from tests.helpers.self_distillation import TINY_RUN
from tests.helpers.stores import store_of


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12.4, "12 s"), (365, "6 min 05 s"), (4 * 3600 + 57 * 60 + 20, "4 h 57 min"), (-3, "0 s")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_clock_projects_from_the_steps_after_the_first():
    clock = RunClock()
    assert clock.remaining(0, 100, now=0.0) is None
    clock.tick(1, now=10.0)  # the first step's end: start-up is not counted
    clock.tick(5, now=99.0)  # later ticks do not move the start
    assert clock.remaining(1, 100, now=10.0) is None
    assert clock.remaining(11, 100, now=30.0) == pytest.approx(89 * 2.0)  # 2 s per step
    assert clock.remaining(11, float("inf"), now=30.0) is None  # max_epochs=-1: unknown


def test_the_bar_shows_the_remaining_time_of_the_whole_fit(tmp_path):
    bar = RunProgressBar()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[bar])  # fmt: skip
    model = BoringModel()
    trainer.fit(model)
    assert bar.clock.start_step == 1
    assert bar.get_metrics(trainer, model)["run left"] == "0 s"


def test_a_training_run_prints_each_line_once_and_its_duration(tmp_path):
    store = store_of(tmp_path / "store")
    out = tmp_path / "out"
    proc = cli("method=temi", "dataset=custom", f"dataset.path={store}", "trainer.max_epochs=2",
               *TINY_RUN, f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert console.count("GPU available:") == 1
    for noise in ("Tip:", "litlogger", "LeafSpec", "TPU available", "[lightning.pytorch"):
        assert noise not in console, noise
    log = (out / "run.log").read_text()
    assert "training: 2 epochs, " in log and "epoch 1 of 2 done; 1 more epoch take about" in log
    assert "[clusterbench.core.progress][INFO]" in log  # the file keeps the full format
