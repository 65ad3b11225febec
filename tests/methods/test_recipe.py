"""The deep methods' defaults are the reference implementation's recommended recipe, the
embedded digits data trains both methods end to end, and the docs (docs/methods.md,
docs/data.md) state both as they are."""

from __future__ import annotations

import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from clusterbench.data.datasets import digits
from clusterbench.methods.self_distillation.heads import FusedHeads
from clusterbench.methods.self_distillation.module import (
    SelfDistillationClustering,
    default_warmup_epochs,
)
from clusterbench.methods.self_distillation.pairs import NeighbourPairDataModule
from clusterbench.run import run
from tests.helpers import ROOT
from tests.helpers.compose import compose_config
from tests.helpers.self_distillation import knn_blobs, make_trainer, tiny_model

DOCS = ROOT / "docs"


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_method_configs_hold_the_reference_recipe(tmp_path, method):
    m = compose_config(tmp_path, [f"method={method}"]).method
    # the reference README: --lr=1e-4 --min_lr=1e-4 --warmup_epochs=20 --max_momentum_teacher=0.996
    assert m.base_lr == 1e-4 and m.min_lr is None and m.warmup_epochs is None
    assert m.teacher_momentum == 0.996 and m.final_teacher_momentum is None
    assert m.student_temp == m.teacher_temp == 0.1 and m.warmup_teacher_temp is None
    assert m.weight_decay == 1e-4 and m.freeze_last_layer_epochs == 1 and m.drop_last is True
    assert (m.hidden_dim, m.bottleneck_dim, m.num_hidden_layers) == (512, 256, 1)
    assert m.knn == 50 and m.input_norm == "none"


def test_methods_page_states_the_configured_recipe(tmp_path):
    """docs/methods.md lists the defaults a user gets; each statement is checked against them."""
    text = " ".join((DOCS / "methods.md").read_text().split())
    temi = compose_config(tmp_path / "temi", ["method=temi"]).method
    scan = compose_config(tmp_path / "scanv2", ["method=scanv2"]).method
    assert temi.student_temp == temi.teacher_temp == 0.1
    assert "student and teacher temperature 0.1" in text
    assert temi.teacher_momentum == 0.996 and temi.final_teacher_momentum is None
    assert "teacher momentum a constant 0.996" in text
    assert temi.base_lr == 1e-4 and "lr = 1e-4 x B / 256" in text
    assert "`min(20, max_epochs // 2)`" in text and default_warmup_epochs(50) == 20
    assert temi.weight_decay == 1e-4 and "weight decay 1e-4" in text
    assert temi.freeze_last_layer_epochs == 1 and "last layer frozen in epoch 1" in text
    assert temi.num_heads == scan.num_heads == 32 and "(`method.num_heads`, 32)" in text
    assert temi.knn == scan.knn == 50 and "`method.knn` (50) nearest neighbours" in text
    assert (temi.beta, temi.batch_size) == (0.6, 512) and "`method.beta` 0.6, B = 512" in text
    assert (scan.alpha, scan.batch_size) == (5, 4096) and "`method.alpha` 5, B = 4096" in text


def test_default_warmup_is_the_reference_20_epochs_at_most_half_the_run():
    assert default_warmup_epochs(100) == 20 and default_warmup_epochs(50) == 20
    assert default_warmup_epochs(25) == 12 and default_warmup_epochs(3) == 1
    assert default_warmup_epochs(1) == 0


def test_module_defaults_keep_teacher_momentum_constant():
    model = SelfDistillationClustering(in_dim=8, num_clusters=3, num_heads=2)
    model._total_steps = 100
    assert [model.teacher_momentum_at(s) for s in (0, 50, 99, 100)] == [0.996] * 4
    annealed = SelfDistillationClustering(
        in_dim=8, num_clusters=3, num_heads=2, final_teacher_momentum=1.0
    )
    annealed._total_steps = 100
    assert annealed.teacher_momentum_at(0) == 0.996 and annealed.teacher_momentum_at(100) == 1.0


class LearningRates(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.values.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_default_lr_warms_up_linearly_from_zero_then_stays_flat(single_thread):
    x, nn_table, _ = knn_blobs()
    model = tiny_model("temi", warmup_epochs=None)  # 5 epochs -> 2 warm-up epochs
    data = NeighbourPairDataModule(x, nn_table, knn=10, batch_size=32, seed=0)
    lrs = LearningRates()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer(5, [lrs]).fit(model, datamodule=data)
    values = np.array(lrs.values)
    steps_per_epoch = len(values) // 5
    warmup = 2 * steps_per_epoch
    peak = 1e-3 * 32 / 256
    np.testing.assert_allclose(values[:warmup], np.linspace(0, peak, warmup), atol=1e-12)
    np.testing.assert_allclose(values[warmup:], peak, rtol=1e-6)


def test_last_layer_starts_as_nn_linear_default_with_unit_gain():
    torch.manual_seed(0)
    heads = FusedHeads(64, 50, num_heads=4, hidden_dim=32, bottleneck_dim=256)
    v = heads.last_layer.weight_v
    bound = 1 / math.sqrt(256)  # nn.Linear(256, C): kaiming_uniform(a=sqrt(5))
    assert v.abs().max() <= bound and v.abs().max() > 0.99 * bound
    assert abs(v.std().item() - bound / math.sqrt(3)) < 0.002  # uniform, not std 0.02
    assert torch.all(heads.last_layer.weight_g == 1)


def test_digits_store_is_the_documented_split(tmp_path):
    documented = " ".join((DOCS / "data.md").read_text().split())
    assert "`train_test_split(test_size=0.2, stratify=y, random_state=0)`" in documented
    assert "into 1437 train / 360 val" in documented and "1797 8x8 images" in documented
    view = digits(str(tmp_path / "cache"))
    assert (len(view.train), len(view.val), view.dim, view.num_classes) == (1437, 360, 64, 10)
    assert view.class_names == [str(c) for c in range(10)]
    train = view.train.to_numpy()
    assert train.dtype == np.float32 and train.min() == 0.0 and train.max() == 1.0
    # stratified: every class keeps its share in both splits
    train_counts = np.bincount(view.train_labels, minlength=10)
    total = train_counts + np.bincount(view.val_labels, minlength=10)
    assert np.abs(train_counts - 0.8 * total).max() <= 1
    again = digits(str(tmp_path / "cache"))  # cached: the same store directory
    assert again.store.path == view.store.path


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_digits_end_to_end_is_far_above_chance(tmp_path, single_thread, method):
    cfg = compose_config(
        tmp_path,
        [
            f"method={method}",
            "dataset=digits",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "logger=none",
            "method.num_heads=2",
            "method.batch_size=128",
            "method.knn=20",
            "trainer.max_epochs=12",
        ],
    )
    payload = run(cfg, tmp_path / "run")
    m = payload["metrics"]
    # chance is ACC 0.1 / NMI 0; the reference recipe on these settings gives ~0.5 / ~0.5
    assert m["acc"] > 0.3 and m["nmi"] > 0.3, m
    assert payload["method_info"]["warmup_epochs"] == 6
    assert payload["method_info"]["steps"] == 12 * (1437 // 128)  # last partial batch dropped
