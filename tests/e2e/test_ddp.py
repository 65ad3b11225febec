"""Two-process DDP (gloo, CPU) through the real entry point equals one process, global batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.cli import cli


@pytest.mark.parametrize("method", ["temi", "scanv2"])
def test_two_process_ddp_matches_single_process(easy_store, tmp_path, method):
    common = [
        f"method={method}",
        "dataset=custom",
        f"dataset.path={easy_store}",
        "trainer.max_epochs=2",
        "method.num_heads=4",
        "method.batch_size=64",
        "method.knn=5",
        "method.hidden_dim=64",
        "method.bottleneck_dim=32",
        "logger=none",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    single = cli(*common, f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = cli(
        *common,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        cwd=tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr
    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert b["method_info"]["steps"] == a["method_info"]["steps"]  # global batch split, not doubled
    assert b["method_info"]["head_losses_last_epoch"] == pytest.approx(
        a["method_info"]["head_losses_last_epoch"], rel=1e-5
    )
    assert b["metrics"]["acc"] == pytest.approx(a["metrics"]["acc"], abs=1e-9)
    assert b["metrics"]["nmi"] == pytest.approx(a["metrics"]["nmi"], abs=1e-6)


def test_distributed_kmeans_on_two_processes_matches_one(easy_store, tmp_path):
    common = ["method=kmeans", "method.backend=distributed", "method.niter=10", "dataset=custom",
              f"dataset.path={easy_store}", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    single = cli(*common, f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = cli(*common, "trainer.devices=2", "trainer.strategy=ddp",
              f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert (a["method_info"]["kmeans_world_size"], b["method_info"]["kmeans_world_size"]) == (1, 2)
    assert b["metrics"]["acc"] == a["metrics"]["acc"] and b["metrics"]["nmi"] == a["metrics"]["nmi"]
    assert b["method_info"]["kmeans_objective"] == pytest.approx(
        a["method_info"]["kmeans_objective"], rel=1e-9
    )


def test_neighbours_mined_by_two_processes_are_what_a_run_reads(easy_store, tmp_path):
    from clusterbench.data.rows import FeatureRows
    from clusterbench.data.store import FeatureStore
    from clusterbench.neighbours import search_neighbours

    common = ["dataset=custom", f"dataset.path={easy_store}", "knn.k=5",
              f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    ddp = cli("neighbours", *common, "trainer.devices=2", "trainer.strategy=ddp",
              f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    assert "mined by 2 process(es)" in ddp.stdout
    (table_file,) = (tmp_path / "cache" / "knn").glob("*_train_k5_Flat_v1.npy")
    rows = FeatureRows(FeatureStore.open(easy_store).train.features)
    expected = search_neighbours(rows, 5, "Flat", device="cpu")
    assert (np.load(table_file) == expected).all()
    # A one-process clustering run finds the table under its own key.
    run = cli("method=temi", "method.knn=5", "method.num_heads=2", "trainer.max_epochs=1",
              *common, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    info = json.loads((tmp_path / "run" / "results.json").read_text())["method_info"]
    assert info.get("knn_from_cache") is True
