"""Every option of every config group composes; the ones that build offline also instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clusterbench.core.config import CONFIG_DIR
from clusterbench.core.device import build_trainer, training_precision
from tests.helpers.compose import compose_config

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUPS = ["dataset", "extractor", "method", "trainer", "logger", "paths", "knn", "experiment"]


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in GROUPS for o in options(g)]
    + [
        ("hydra/launcher", o)
        for o in options("hydra/launcher") + ["submitit_slurm", "submitit_local"]
    ],
)
def test_every_group_option_composes(tmp_path, group, option):
    extra = ["extractor=ibot_vitl"] if group == "dataset" else []
    cfg = compose_config(tmp_path, [f"{group}={option}", *extra])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["seed"] == 0
    if group == "hydra/launcher":
        assert "submitit" in cfg.hydra.launcher._target_
    if group == "method":
        assert cfg.method.name and "num_clusters" in cfg.method


def test_groups_have_expected_options():
    assert {"synthetic", "custom", "in1k", "in21k"} <= set(options("dataset"))
    assert {"kmeans"} <= set(options("method"))
    assert {"cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"wandb", "csv", "none"} <= set(options("logger"))


def test_defaults(tmp_path):
    cfg = compose_config(tmp_path, [])
    assert cfg.dataset.name == "synthetic" and cfg.method.name == "kmeans"
    assert cfg.logger.wandb.offline is True
    assert cfg.knn.k == 50 and cfg.knn.index == "Flat"


def test_slurm_launcher_exposes_cluster_settings(tmp_path):
    launcher = compose_config(tmp_path, ["hydra/launcher=slurm"]).hydra.launcher
    for key in ("partition", "gpus_per_node", "cpus_per_task", "timeout_min", "mem_gb"):
        assert key in launcher


def test_named_dataset_resolves_store_from_extractor(tmp_path):
    cfg = compose_config(
        tmp_path, ["dataset=in1k", "extractor=mae_r_vith", "paths.features_root=/data/f"]
    )
    assert cfg.dataset.path == "/data/f/in1k/mae_r_vith"


def test_cpu_trainer_and_offline_loggers_instantiate(tmp_path):
    cfg = compose_config(tmp_path, ["logger=csv"])
    trainer = build_trainer(cfg.trainer)(logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert type(instantiate(cfg.logger.csv)).__name__ == "CSVLogger"
    assert str(trainer.precision) in ("bf16-mixed", "32-true")  # `auto` resolved for this CPU
    wandb_cfg = compose_config(tmp_path, ["logger=wandb"])
    assert type(instantiate(wandb_cfg.logger.wandb)).__name__ == "WandbLogger"


def test_precision_auto_follows_the_hardware(monkeypatch):
    import clusterbench.core.device as device

    assert training_precision("16-mixed", "cpu") == "16-mixed"  # explicit values pass through
    monkeypatch.setattr(device, "fast_bf16", lambda accelerator: accelerator == "cpu")
    assert training_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(device, "fast_bf16", lambda accelerator: False)
    assert training_precision("auto", "cpu") == "32-true"
