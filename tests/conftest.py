"""Shared fixtures (small feature stores, caches, the 7-class tree, one thread) and the marker
that makes every test under tests/e2e/ `slow`. Helpers live in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clusterbench.benchmarks.imagenet21k.tree import Tree
from tests.helpers.stores import easy_store_at
from tests.helpers.tree import seven_class_tree

os.environ.setdefault("CLUSTERBENCH_PROGRESS", "0")
os.environ.setdefault("WANDB_SILENT", "true")

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ (subprocesses, whole commands) is `slow`."""
    for item in items:
        if E2E in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def easy_store(tmp_path: Path) -> Path:
    return easy_store_at(tmp_path / "store")


@pytest.fixture
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session, so the synthetic default is generated once."""
    return tmp_path_factory.getbasetemp() / "cache"


@pytest.fixture(scope="module")
def tree() -> Tree:
    """The 7-class tree of tests/helpers/tree.py (DOG, ORGANISM, ... name its nodes)."""
    return seven_class_tree()


@pytest.fixture
def single_thread():
    """Tiny tensors gain nothing from threads, and spinning threads stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
