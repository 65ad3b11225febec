"""What a careless or hostile user can hand the commands: each case ends in one error line (or a
named, skipped file), never in code run from a file, a wrong number or a stack trace."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tests.helpers.cli import cli
from tests.helpers.stores import easy_store_at

NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # torch sees no CUDA device, whatever the machine has
TINY_TEMI = ["method=temi", "method.num_heads=2", "method.hidden_dim=16", "method.bottleneck_dim=8",
             "method.knn=5", "method.batch_size=64", "logger=none"]  # fmt: skip


class _Marker:
    """Unpickling this runs `Path.touch`: what a crafted checkpoint would do with `os.system`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    store, out, marker = easy_store_at(tmp_path / "store"), tmp_path / "out", tmp_path / "pwned"
    out.mkdir()
    with open(out / "hpc_ckpt_1.ckpt", "wb") as fh:
        pickle.dump({"state_dict": {}, "payload": _Marker(marker)}, fh)
    proc = cli("dataset=custom", f"dataset.path={store}", *TINY_TEMI, "trainer.max_epochs=1",
               f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert f"checkpoint {out / 'hpc_ckpt_1.ckpt'} cannot be read" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "results.json").exists()


def test_zero_epochs_is_refused_before_any_work(tmp_path):
    store, out = easy_store_at(tmp_path / "store"), tmp_path / "out"
    proc = cli("dataset=custom", f"dataset.path={store}", *TINY_TEMI, "trainer.max_epochs=0",
               f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: trainer.max_epochs=0: training needs at least one epoch (untrained heads' "
        "clusters are not a result)"
    )
    assert not (out / "results.json").exists() and not (tmp_path / "cache" / "knn").exists()


CUDA_ERROR = "error: device=cuda but torch sees no CUDA device; use device=auto or cpu\n"


def test_a_warm_knn_cache_does_not_hide_a_missing_gpu(tmp_path):
    """Mining is skipped when the kNN table is cached, so the device is checked at the head."""
    store, cache = easy_store_at(tmp_path / "store"), tmp_path / "cache"
    data = ["dataset=custom", f"dataset.path={store}", *TINY_TEMI, "trainer.max_epochs=1"]
    warm = cli(*data, "device=cpu", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path, cache=cache)
    assert warm.returncode == 0, warm.stderr
    proc = cli(*data, "device=cuda", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path,
               cache=cache, **NO_GPU)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (2, CUDA_ERROR)
    assert not (tmp_path / "b" / "results.json").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["probe", "probe.epochs=1"],
        ["separability"],
        ["zeroshot"],
        ["hzr", "dataset.base=synthetic"],
    ],
    ids=["probe", "separability", "zeroshot", "hzr"],
)
def test_every_command_refuses_cuda_without_it_the_same_way(tmp_path, command):
    store = easy_store_at(tmp_path / "store")
    data = [] if command[0] == "hzr" else ["dataset=custom", f"dataset.path={store}"]
    proc = cli(*command, *data, "device=cuda", f"paths.cache_dir={tmp_path / 'cache'}",
               f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path, **NO_GPU)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (2, CUDA_ERROR)
    assert not (tmp_path / "b" / "results.json").exists() and not (tmp_path / "cache").exists()


def test_a_gpu_trainer_on_a_cpu_machine_is_one_line(tmp_path):
    store, out = easy_store_at(tmp_path / "store"), tmp_path / "out"
    proc = cli("dataset=custom", f"dataset.path={store}", *TINY_TEMI, "trainer=gpu",
               f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache", **NO_GPU)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: trainer.accelerator=gpu but torch sees no CUDA device")
    assert "Traceback" not in proc.stderr and not (tmp_path / "cache").exists()


def _result(root: Path, name: str, **fields) -> Path:
    config = {"dataset": {"name": "in1k"}, "method": {"name": "kmeans"}}
    result = {"method": "kmeans", "dataset": "in1k", "seed": 0, "metrics": {"acc": 0.5},
              "config": config, **fields}  # fmt: skip
    path = root / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result))
    return path


def test_report_and_aggregate_skip_and_name_what_they_cannot_average(tmp_path):
    sweep = tmp_path / "sweep"
    _result(sweep, "0_good", seed=0, metrics={"acc": 0.70, "nmi": 0.8})
    bad = {
        "1_percent": {"seed": 1, "metrics": {"acc": 70.8}},
        "2_nan": {"seed": 2, "metrics": {"acc": float("nan")}},
        "3_list": {"seed": 3, "metrics": {"acc": [0.5, 0.6]}},
        "4_string_seed": {"seed": "4"},
    }
    for name, fields in bad.items():
        _result(sweep, name, **fields)
    (sweep / "5_bare").mkdir()
    (sweep / "5_bare" / "results.json").write_text("42")
    agg = cli("aggregate", str(sweep), cwd=tmp_path)
    assert agg.returncode == 0, agg.stderr
    for name in [*bad, "5_bare"]:
        assert f"skipped {sweep / name / 'results.json'}: " in agg.stderr, name
    assert "written in percent" in agg.stderr and "not a finite number" in agg.stderr
    # The one good run: its mean, and a spread that one seed cannot give.
    assert "70.00 ± n/a" in agg.stdout and "0.00" not in agg.stdout.split("70.00")[1][:8]
    rep = cli("report", str(sweep), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    for name in [*bad, "5_bare"]:
        assert name in text, name  # every skipped run is named in the report's problems
    assert "nan ±" not in text and "± nan" not in text  # no NaN cell


def test_the_report_never_averages_two_experiments_into_one_cell(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, knn in ((0, 10), (1, 50)):
        config = {"dataset": {"name": "in1k"}, "method": {"name": "temi", "knn": knn},
                  "paper": {"table": "table1"}}  # fmt: skip
        _result(sweep, f"{seed}_in1k_temi", seed=seed, method="temi", config=config,
                metrics={"acc": 0.4 + 0.2 * seed})  # fmt: skip
    rep = cli("report", str(sweep), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "– (settings differ)" in text and "50.00" not in text  # no mean of 40 % and 60 %
    assert "2 experiments share this cell, not averaged: method.knn=10" in text
