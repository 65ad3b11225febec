"""Seed aggregation of results files."""

from __future__ import annotations

import json

import pytest

from clusterbench.aggregate import main


def _result(path, seed, acc, method="kmeans"):
    path.mkdir(parents=True)
    payload = {
        "dataset": "synthetic",
        "method": method,
        "seed": seed,
        "metrics": {"acc": acc, "nmi": 0.5},
    }
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
