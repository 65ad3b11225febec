"""`python -m clusterbench report`: a miniature sweep through the real entry point becomes
tables whose cells are the seeds' mean ± std, figures, and a list of the runs that failed."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from clusterbench.core.tracking import log_run
from clusterbench.report.__main__ import main as report_main
from clusterbench.report.paper import paper_tables
from tests.helpers import ROOT
from tests.helpers.cli import run_module
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

# An experiment of the test's own (on Hydra's search path), with per-method settings the way
# conf/experiment/methods/ carries them: TEMI's keys reach TEMI only, k-means stays valid.
EXPERIMENT = """# @package _global_
defaults:
  - override /dataset: custom
  - _self_
paper:
  table: mini
  row: ${dataset.name}
dataset:
  path: ${paths.features_root}/${dataset.name}
trainer:
  max_epochs: 2
  enable_progress_bar: false
"""
TEMI = "method:\n  num_heads: 2\n  batch_size: 64\n  knn: 10\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """k-means and TEMI x 2 benchmarks x 2 seeds, one --multirun (Hydra's basic launcher)."""
    root = tmp_path_factory.mktemp("report")
    for i, name in enumerate(("coarse_d1", "coarse_d2")):  # named so Figures 2 and 5 apply
        train, train_labels = sphere_blobs(40, 6, 16, seed=i, spread=0.4)
        val, val_labels = sphere_blobs(15, 6, 16, seed=i, spread=0.4)
        write_store(root / "features" / name, train, train_labels, val, val_labels)
    conf = root / "conf" / "experiment"
    (conf / "methods").mkdir(parents=True)
    (conf / "mini.yaml").write_text(EXPERIMENT)
    (conf / "methods" / "mini_temi.yaml").write_text(TEMI)
    proc = run_module(
        "clusterbench",
        "--multirun",
        f"hydra.searchpath=[file://{root / 'conf'}]",
        "experiment=mini",
        "dataset.name=coarse_d1,coarse_d2",
        "method=kmeans,temi",
        "seed=0,1",
        "logger=none",
        f"paths.features_root={root / 'features'}",
        f"paths.cache_dir={root / 'cache'}",
        f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "sweep"


def _results(sweep: Path) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for file in sorted(sweep.rglob("results.json")):
        r = json.loads(file.read_text())
        out.setdefault((r["dataset"], r["method"]), []).append(r)
    return out


@pytest.mark.slow
def test_per_method_settings_reach_their_method_only(sweep):
    results = _results(sweep)
    assert len(results) == 4 and all(len(v) == 2 for v in results.values())
    temi = results[("coarse_d1", "temi")][0]
    assert temi["config"]["method"]["num_heads"] == 2 and temi["config"]["method"]["knn"] == 10
    assert "num_heads" not in results[("coarse_d1", "kmeans")][0]["config"]["method"]
    assert temi["config"]["paper"] == {"table": "mini", "row": "coarse_d1"}


def test_report_cells_are_the_seed_means(sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    cells = {(c["row"], c["column"]): c for c in csv.DictReader((out / "cells.csv").open())}
    for (row, method), runs in _results(sweep).items():
        acc = 100 * np.array([r["metrics"]["acc"] for r in runs])
        cell = cells[(row, method)]
        assert float(cell["mean"]) == pytest.approx(acc.mean(), abs=1e-3)
        assert float(cell["std"]) == pytest.approx(acc.std(), abs=1e-3)
        assert cell["n"] == "2" and cell["seeds"] == "0 1"
        assert f"{acc.mean():.2f} ± {acc.std():.2f} (2)" in text
    assert (out / "mini.csv").read_text().startswith("benchmark,# samples,# classes,k-means,TEMI")
    # The best clustering accuracy of each row (ties included) is bold, nothing else.
    for line in (out / "mini.md").read_text().splitlines()[4:]:
        row = line.split(" | ")[0].strip("| ")
        means = {m: float(cells[(row, m)]["mean"]) for m in ("kmeans", "temi")}
        best = [m for m, v in means.items() if v == max(means.values())]
        assert line.count("**") == 2 * len(best), line
        for m in best:
            assert f"**{means[m]:.2f} ± " in line
    for name in ("figure2_left.png", "figure5.png"):
        assert (out / name).stat().st_size > 10_000
    assert "figure6: missing" in text and not (out / "figure6.png").exists()
    assert "none: every job of the sweep wrote results.json" in text


def test_deleted_and_corrupt_runs_are_listed(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    import shutil

    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("wandb", "csv"))
    gone = next(copy.glob("*_coarse_d1_temi_seed1"))
    (gone / "results.json").unlink()
    bad = next(copy.glob("*_coarse_d2_kmeans_seed0"))
    (bad / "results.json").write_text('{"dataset": "coarse_d2", "metr')
    assert report_main([str(copy), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert re.search(
        rf"\| missing \| `{re.escape(str(gone))}` \| mini / coarse_d1 / temi / 1 \|", text
    )
    assert re.search(rf"\| unreadable \| `{re.escape(str(bad))}` \|.*not readable JSON", text)
    cells = {
        (c["row"], c["column"]): c for c in csv.DictReader((tmp_path / "rep" / "cells.csv").open())
    }
    assert (cells[("coarse_d1", "temi")]["n"], cells[("coarse_d1", "temi")]["asked"]) == ("1", "2")
    assert "(1 of 2)" in (tmp_path / "rep" / "mini.md").read_text()


def test_a_directory_without_runs_is_one_line_error(tmp_path):
    proc = run_module("clusterbench.report", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: no results.json") and proc.stderr.count("\n") == 1


def test_a_missing_directory_is_named(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert f"error: not a directory: {tmp_path / 'nope'}" in capsys.readouterr().err


def _fake(path: Path, dataset: str, method: str, seed: int, acc: float, extra: dict) -> None:
    """A results.json in the schema the runs write (for the paper tables and figures whose
    real inputs need ImageNet features)."""
    rng = np.random.default_rng(seed)
    count = rng.integers(0, 50, 15).tolist()
    payload = {
        "dataset": dataset, "method": method, "seed": seed,
        "metrics": {"acc": acc, "nmi": acc, "top5_acc": min(1, acc + 0.1), "top1_L_acc": acc + 0.02,
                    "top5_L_acc": min(1, acc + 0.15), "ece": 0.1, "mean_confidence": 0.7,
                    "num_clusters": 1000, "num_classes": 1000},
        "reliability": {"bin_edges": np.linspace(0, 1, 16).tolist(), "count": count,
                        "accuracy": rng.random(15).tolist(), "confidence": rng.random(15).tolist()},
        "dataset_summary": {"num_train": 1281167, "num_classes": 1000},
        "config": {"extractor": {"name": extra.pop("extractor", "mae_r_vith")}, **extra},
    }  # fmt: skip
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(payload))


def test_paper_layouts_and_calibration_figures(tmp_path, capsys):
    for seed in range(3):
        for method, acc in (("kmeans", 0.62), ("temi", 0.66 + 0.01 * seed), ("scanv2", 0.70)):
            _fake(tmp_path / f"t1_{method}_{seed}", "in1k", method, seed, acc,
                  {"paper": {"table": "table1"}})  # fmt: skip
            _fake(tmp_path / f"t4_{method}_{seed}", "in1k_real", method, seed, acc,
                  {"paper": {"table": "table4"}})  # fmt: skip
        _fake(tmp_path / f"zs_{seed}", "in21k", "clip_zeroshot", 0, 0.4,
              {"zeroshot": {}, "extractor": "clip_vitg"})  # fmt: skip
        zs = json.loads((tmp_path / f"zs_{seed}" / "results.json").read_text())
        zs["method_info"] = {"candidates": ("all", "level", "siblings")[seed]}
        (tmp_path / f"zs_{seed}" / "results.json").write_text(json.dumps(zs))
    _fake(tmp_path / "probe", "in1k", "probing", 0, 0.83, {"probe": {}})
    out = tmp_path / "rep"
    assert report_main([str(tmp_path), "--out", str(out)]) == 0
    table1 = (out / "table1.md").read_text()
    # ImageNet-1K row: paper numbers beside ours, the difference, SCANv2 best in bold.
    row = next(ln for ln in table1.splitlines() if ln.startswith("| ImageNet-1K (`in1k`)"))
    assert "**70.00 ± 0.00 (3)**" in row and "69.79" in row and "+0.21" in row
    assert "*83.00 ± n/a (1)*" in row and "82.90" in row
    assert "Imbalanced-2K" in table1 and "2.34M (paper)" in table1  # rows without runs stay
    table4 = (out / "table4.md").read_text()
    assert "62.00 ± 0.00 (3)" not in table4 and "62.0 ± 0.0 (3)" in table4
    assert "64.0 ± 0.0 (3) (+3.2 %)" in table4 and "68.2 (+8.9 %)" in table4
    for name in ("figure3_left_scanv2", "figure3_middle_temi", "figure3_right", "figure8_left",
                 "figure7_all", "figure7_level", "figure7_siblings"):  # fmt: skip
        assert (out / f"{name}.png").stat().st_size > 5_000, name


def test_paper_numbers_are_complete():
    tables = paper_tables()
    assert [len(tables[t]) for t in ("table1", "table2", "table3", "table4", "table5")] == [
        4, 6, 6, 2, 14]  # fmt: skip
    for name in ("table1", "table2", "table3", "table5"):
        for row in tables[name].values():
            assert {c for c, _ in row.values} == {"probing", "kmeans", "temi", "scanv2"}
    assert tables["table5"]["coarse_d1"].values[("kmeans", "acc")] == 19.44
    assert tables["table4"]["in1k_real"].values[("scanv2", "top5_L_acc")] == 89.4


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_table_experiments_compose_for_both_launchers(tmp_path, launcher):
    base = ["experiment=table1", f"hydra/launcher={launcher}"]
    cases = [("in1k", "mae_r_vith", 50), ("imbalanced_2k", "ibot_vitl", 25)]
    methods = [("kmeans", None), ("temi", 512), ("scanv2", 4096)]
    if launcher == "slurm":  # the launcher is independent of the rest: one case is enough
        cases, methods = cases[1:], methods[1:2]
    for dataset, extractor, epochs in cases:
        for method, batch in methods:
            cfg = compose_config(tmp_path, [*base, f"dataset={dataset}", f"method={method}"])
            resolved = OmegaConf.to_container(cfg, resolve=True)
            assert "submitit" in cfg.hydra.launcher._target_
            assert resolved["hydra"]["sweep"]["dir"].endswith("sweeps/table1")
            assert resolved["logger"]["wandb"]["group"] == "table1"
            assert resolved["extractor"]["name"] == extractor
            assert resolved["trainer"]["max_epochs"] == epochs
            assert resolved["method"].get("batch_size") == batch
            assert resolved["method"].get("num_heads") == (None if batch is None else 32)


def _sweep_commands() -> list[tuple[str, str, list[str]]]:
    """(file, module, overrides) of every clustering --multirun line in multirun_sweeps/."""
    out = []
    for file in sorted((ROOT / "multirun_sweeps").glob("*.sh")):
        text = file.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) > 3 and words[1:4] == ["-m", "clusterbench", "--multirun"]:
                keep = [w for w in words[4:] if w != "$@" and "$OUT" not in w]
                out.append((file.name, "clusterbench", keep))
    return out


def test_every_table_and_figure_has_a_sweep_file():
    names = {p.stem for p in (ROOT / "multirun_sweeps").glob("*.sh")}
    expected = {f"table{i}" for i in range(1, 6)} | {"figure2_left", "figure2_right"}
    assert expected | {f"figure{i}" for i in range(3, 9)} <= names


@pytest.mark.parametrize("file,overrides", [(f, o) for f, _, o in _sweep_commands()])
def test_sweep_lines_compose(tmp_path, file, overrides):
    """The first job of each line composes and resolves into the sweep named after its file
    (the methods and datasets of the lines compose in the tests above and test_config)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    job = BasicSweeper.split_arguments(parsed, None)[0][0]
    resolved = OmegaConf.to_container(compose_config(tmp_path, job), resolve=True)
    assert resolved["paper"]["table"] == file.removesuffix(".sh")
    assert resolved["hydra"]["sweep"]["dir"].endswith(f"sweeps/{resolved['paper']['table']}")


def test_wandb_summary_holds_the_table_and_row(tmp_path):
    class Summary(dict):
        pass

    class Logger:
        experiment = type("E", (), {"summary": Summary()})()

        def log_hyperparams(self, params):
            self.params = params

        def log_metrics(self, metrics):
            self.metrics = metrics

    cfg = compose_config(tmp_path, ["experiment=table5", "dataset=coarse_d3", "logger=none"])
    logger = Logger()
    log_run([logger], cfg, {"acc": 0.5})
    assert logger.experiment.summary["paper/table"] == "table5"
    assert logger.experiment.summary["paper/row"] == "coarse_d3"
    assert logger.params["paper"]["table"] == "table5" and logger.metrics["val/acc"] == 0.5


def test_refined_runs_and_turtle_are_columns_beyond_the_paper(tmp_path):
    """A method followed by refine=self_label is a column of its own beside the method."""
    for seed in range(2):
        for method, acc, refined in (("kmeans", 0.62, False), ("kmeans", 0.64, True),
                                     ("turtle", 0.70, False), ("temi", 0.66, True)):  # fmt: skip
            name = f"{method}{'_sl' if refined else ''}_{seed}"
            extra = {
                "paper": {"table": "table1"},
                "refine": {"select": "auto"} if refined else None,
            }
            _fake(tmp_path / name, "in1k", method, seed, acc, extra)
            if refined:
                result = json.loads((tmp_path / name / "results.json").read_text())
                result["method_info"] = {"refine": {"accepted": True}}
                (tmp_path / name / "results.json").write_text(json.dumps(result))
    out = tmp_path / "rep"
    assert report_main([str(tmp_path), "--out", str(out)]) == 0
    table = (out / "table1.md").read_text()
    header = next(
        ln for ln in table.splitlines() if ln.startswith("| Benchmark") or "k-means |" in ln
    )
    assert "k-means + self-label †" in header and "TURTLE †" in header
    assert "TEMI + self-label †" in header
    row = next(ln for ln in table.splitlines() if ln.startswith("| ImageNet-1K (`in1k`)"))
    assert "62.00 ± 0.00 (2)" in row and "64.00 ± 0.00 (2)" in row and "70.00 ± 0.00 (2)" in row
