"""`python -m clusterbench` end to end: results files, clear errors, loggers, multirun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from clusterbench.core.config import CONFIG_DIR
from clusterbench.run import run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_config


def test_custom_store_writes_results(easy_store, tmp_path):
    out = tmp_path / "out"
    proc = cli(
        "method=kmeans",
        "dataset=custom",
        f"dataset.path={easy_store}",
        "logger=csv",
        f"hydra.run.dir={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "results.json").read_text())
    # Well-separated blobs: every cluster is one class, so each agreement score is perfect.
    for key in ("acc", "nmi", "ari", "top5_acc"):
        assert result["metrics"][key] == pytest.approx(1.0), key
    assert result["dataset_summary"]["num_train"] == 480
    assert result["method_info"]["kmeans_iterations_run"] >= 1
    assert "torch" in result["versions"] and result["seed"] == 0
    assert result["config"]["dataset"]["path"] == str(easy_store)
    assert list((out / "csv").rglob("metrics.csv"))
    assert "acc" in proc.stdout


def test_bad_store_fails_cleanly_without_results(easy_store, tmp_path):
    train = np.load(easy_store / "train.npy")
    train[:3] = np.nan
    np.save(easy_store / "train.npy", train)
    out = tmp_path / "out"
    proc = cli(
        "dataset=custom",
        f"dataset.path={easy_store}",
        "logger=none",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "3 of 480 rows contain NaN or inf" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (out / "results.json").exists()


def test_missing_path_and_missing_features_are_explained(tmp_path):
    proc = cli("dataset=custom", "logger=none", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert proc.returncode == 2 and "dataset.path is not set" in proc.stderr
    proc = cli(
        "dataset=in1k",
        "extractor=ibot_vitl",
        f"paths.features_root={tmp_path}",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'b'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert (
        f"no features for dataset=in1k extractor=ibot_vitl at {tmp_path}/in1k/ibot_vitl"
        in proc.stderr
    )
    assert not (tmp_path / "b" / "results.json").exists()


def test_too_many_clusters_is_an_error(easy_store, tmp_path):
    proc = cli(
        "dataset=custom",
        f"dataset.path={easy_store}",
        "method.num_clusters=5000",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'o'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "fewer than num_clusters=5000" in proc.stderr
    assert not (tmp_path / "o" / "results.json").exists()


def test_wandb_offline_run_is_written_and_named_in_one_line(easy_store, tmp_path):
    """W&B's own console output (a deprecation warning, a 20-line summary) stays off the
    console: the run says once where the offline run is and how to upload it."""
    out = tmp_path / "out"
    proc = cli(
        "dataset=custom",
        f"dataset.path={easy_store}",
        "logger=wandb",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        WANDB_SILENT="false",
    )
    assert proc.returncode == 0, proc.stderr
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    console = proc.stdout + proc.stderr
    assert "wandb:" not in console and "anonymous" not in console
    assert console.count(f"wandb sync {runs[0]}") == 1


def test_multirun_with_local_launcher(easy_store, tmp_path):
    """The default sweep directory (no hydra.sweep.dir given) lands under ./outputs/multirun."""
    proc = cli(
        "--multirun",
        "hydra/launcher=local",
        "seed=0,1",
        "dataset=custom",
        f"dataset.path={easy_store}",
        "logger=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = sorted((tmp_path / "outputs" / "multirun").rglob("results.json"))
    assert len(results) == 2
    assert sorted(json.loads(p.read_text())["seed"] for p in results) == [0, 1]


def test_default_synthetic_run_in_process(cache_dir, tmp_path):
    cfg = compose_config(tmp_path, ["logger=none", f"paths.cache_dir={cache_dir}"])
    payload = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"] == payload["metrics"]
    m = saved["metrics"]
    assert {"acc", "nmi", "ari", "top5_acc", "top1_L_acc", "top5_L_acc"} <= set(m)
    assert m["top1_L_acc"] >= m["acc"] and m["top5_acc"] >= m["acc"]
    assert saved["dataset_summary"]["imbalance_ratio"] > 5


@pytest.mark.parametrize("command", ["config", "extract", "probe", "separability"])
def test_sweep_dir_resolves_before_any_job(command, tmp_path, monkeypatch):
    """A multirun launcher resolves hydra.sweep.dir while no HydraConfig exists; every command's
    paths then follow the directory the command was started in."""
    for name in ("CLUSTERBENCH_ROOT", "CLUSTERBENCH_OUTPUTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=command, return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    assert not HydraConfig.initialized()
    assert Path(cfg.hydra.sweep.dir).parent.parent == tmp_path / "outputs"
    assert cfg.paths.root_dir == str(tmp_path)
