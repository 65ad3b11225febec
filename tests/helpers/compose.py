"""The configs the commands would run, composed in-process with outputs in a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from clusterbench.core.config import CONFIG_DIR


def compose_config(tmp_path: Path, overrides: list[str], name: str = "config") -> DictConfig:
    """The config `python -m clusterbench <overrides>` would run, with outputs in tmp_path;
    `name` picks another primary config (`extract`, `probe`, ...: the other commands)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


def compose_extract(tmp_path: Path, overrides: list[str], name: str = "extract") -> DictConfig:
    """The config `python -m clusterbench extract <overrides>` runs (name="config":
    `python -m clusterbench`), with outputs in tmp_path."""
    return compose_config(tmp_path, overrides, name)


def compose_probe(tmp_path: Path, overrides: list[str], name: str = "probe") -> DictConfig:
    """The config `python -m clusterbench.<name> <overrides>` would run, outputs in tmp_path."""
    return compose_config(tmp_path, overrides, name)


def compose_hzr(tmp_path: Path, overrides: list[str], name: str = "hzr") -> DictConfig:
    """The config `python -m clusterbench.<name> <overrides>` would run (hzr or zeroshot), its
    paths under tmp_path."""
    return compose_config(tmp_path, [f"paths.root_dir={tmp_path}", *overrides], name)
