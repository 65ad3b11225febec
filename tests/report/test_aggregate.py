"""Seed aggregation of results files."""

from __future__ import annotations

import json

import pytest

from clusterbench.report.aggregate import main


def _result(path, seed, acc, method="kmeans", config=None, dataset="synthetic"):
    path.mkdir(parents=True)
    payload = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "metrics": {"acc": acc, "nmi": 0.5},
    }
    if config is not None:
        payload["config"] = config
    (path / "results.json").write_text(json.dumps(payload))


def test_mean_and_std_per_method(tmp_path, capsys):
    for seed, acc in enumerate([0.5, 0.6, 0.7]):
        _result(tmp_path / f"k{seed}", seed, acc)
    _result(tmp_path / "t0", 0, 0.9, method="temi")
    rows = main([str(tmp_path), "--json", str(tmp_path / "summary.json")])
    kmeans = next(r for r in rows if r["method"] == "kmeans")
    assert kmeans["seeds"] == [0, 1, 2]
    assert kmeans["acc"]["mean"] == pytest.approx(0.6)
    assert kmeans["acc"]["std"] == pytest.approx(0.0816496, rel=1e-5)
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert "60.00 ± 8.16" in capsys.readouterr().out


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])


def _config(path: str, k: int, seed: int) -> dict:
    return {
        "seed": seed,
        "paths": {"output_dir": f"/runs/{seed}"},
        "dataset": {"name": "custom", "path": path},
        "method": {"name": "kmeans", "num_clusters": k},
    }


def test_different_experiments_are_never_merged(tmp_path, capsys):
    for seed in range(2):  # same experiment, two seeds, different output dirs
        _result(tmp_path / f"a{seed}", seed, 1.0, config=_config("/a", 10, seed), dataset="custom")
    _result(tmp_path / "b0", 0, 0.4, config=_config("/b", 10, 0), dataset="custom")
    _result(tmp_path / "c0", 0, 0.2, config=_config("/a", 50, 0), dataset="custom")
    rows = main([str(tmp_path)])
    assert len(rows) == 3
    first = next(r for r in rows if r["seeds"] == [0, 1])
    assert first["acc"]["mean"] == 1.0
    assert "dataset.path=/a" in first["settings"] and "method.num_clusters=10" in first["settings"]
    assert "method.num_clusters=50" in capsys.readouterr().out


def test_broken_results_are_named_and_skipped(tmp_path, capsys):
    _result(tmp_path / "good", 0, 0.5)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "results.json").write_text('{"dataset": "synth')
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.json").write_text("{}")
    rows = main([str(tmp_path)])
    assert [r["seeds"] for r in rows] == [[0]]
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cut' / 'results.json'}: not readable JSON" in err
    assert f"{tmp_path / 'empty' / 'results.json'}: lacks dataset" in err


def test_a_swapped_config_group_is_named_by_its_class_not_by_each_key():
    from clusterbench.report.collect import differing

    def key(**settings):
        base = {"dataset": "digits", "method": "kmeans"}
        return tuple(sorted({**base, **{k: json.dumps(v) for k, v in settings.items()}}.items()))

    two_level = key(**{"k_estimation._target_": "pkg.TwoLevel", "k_estimation.nredo": 10})
    finch = key(**{"k_estimation._target_": "pkg.FinchLevels", "k_estimation.level": None})
    finer = key(**{"k_estimation._target_": "pkg.FinchLevels", "k_estimation.level": 0})
    labels = differing({two_level: [], finch: [], finer: []})
    assert labels[two_level] == "k_estimation=TwoLevel"
    assert labels[finch] == "k_estimation=FinchLevels k_estimation.level=None"
    assert labels[finer] == "k_estimation=FinchLevels k_estimation.level=0"
