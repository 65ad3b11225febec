"""The distributed benchmark: its cost model's arithmetic, and a quick run writes every number."""

from __future__ import annotations

import json

import pytest

from clusterbench.perf.__main__ import main as perf_main
from clusterbench.perf.distributed import cost_model


def test_cost_model_of_one_billion_rows():
    m = cost_model(rows=1e9, dim=768, clusters=100_000, gpus=64, tflops=400.0, link_gbs=25.0)
    assert m["rows_per_rank"] == pytest.approx(15_625_000)
    assert m["shard_gb_bf16"] == pytest.approx(15_625_000 * 768 * 2 / 1e9)
    assert m["flops_per_rank_per_iteration"] == pytest.approx(2 * 15_625_000 * 100_000 * 768)
    ring = 2 * 63 / 64 * (100_000 * 768 + 100_001) * 8
    assert m["allreduce_gb_per_rank_per_iteration"] == pytest.approx(ring / 1e9)


def test_quick_run_times_one_and_two_processes(tmp_path, capsys):
    out = tmp_path / "distributed.json"
    assert perf_main(["distributed", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for kind in ("kmeans", "knn_exact"):
        assert {"1x1_s", "1x2_s", "2x1_s", "efficiency"} <= set(report[kind])
        assert report[kind]["2x1_s"] > 0
    assert "efficiency" in capsys.readouterr().out
