"""Shared fixtures: small feature stores on disk and composed Hydra configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.core.config import CONFIG_DIR
from clusterbench.data import store_writer

os.environ.setdefault("CLUSTERBENCH_PROGRESS", "0")
os.environ.setdefault("WANDB_SILENT", "true")


def write_store(
    root: Path,
    train: np.ndarray,
    train_labels: np.ndarray,
    val: np.ndarray,
    val_labels: np.ndarray,
    classes: list[str] | None = None,
) -> Path:
    arrays = {"train": train, "train_labels": train_labels, "val": val, "val_labels": val_labels}
    return store_writer.write_store(root, arrays, classes=classes)


def blobs(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 0.05):
    """Well-separated directions on the sphere: an easy case every method must solve."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    order = rng.permutation(labels.size)
    return x[order].astype(np.float32), labels[order].astype(np.int64)


@pytest.fixture
def easy_store(tmp_path: Path) -> Path:
    train, train_labels = blobs(60, 8, 16, seed=0)
    val, val_labels = blobs(20, 8, 16, seed=0)
    return write_store(
        tmp_path / "store",
        train,
        train_labels,
        val,
        val_labels,
        classes=[f"n{i:08d}" for i in range(8)],
    )


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


@pytest.fixture
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session, so the synthetic default is generated once."""
    return tmp_path_factory.getbasetemp() / "cache"


# A 7-class tree (the shape of tests/fixtures/wordnet_tiny), nodes 7..9 are not classes:
#   entity(7) -> organism(1) -> animal(3) -> dog(0) -> puppy(5)
#                               animal(3) -> working_animal(9) -> sled_dog(4)
#   entity(7) -> artifact(8) -> tool(6);  sun(2) is a root
DOG, ORGANISM, SUN, ANIMAL, SLED_DOG, PUPPY, TOOL, ENTITY, ARTIFACT, WORKING = range(10)


@pytest.fixture(scope="module")
def tree() -> Tree:
    parent = [ANIMAL, ENTITY, -1, ORGANISM, WORKING, DOG, ARTIFACT, -1, ENTITY, ANIMAL]
    return Tree(
        wnids=tuple(f"n{i:08d}" for i in range(10)),
        names=("dog", "organism", "sun", "animal", "sled dog", "puppy", "tool", "entity")
        + ("artifact", "working animal"),
        parent=np.array(parent),
        num_classes=7,
        has_hypernym=np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], bool),
        has_hyponym=np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 1], bool),
    )


@pytest.fixture
def single_thread():
    """Tiny tensors gain nothing from threads, and spinning threads stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_module(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a subprocess, as a user runs it: no progress bars, W&B
    quiet, Hydra's one-line errors; `env` adds variables (e.g. CLUSTERBENCH_CACHE)."""
    full_env = {
        **os.environ,
        "CLUSTERBENCH_PROGRESS": "0",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
