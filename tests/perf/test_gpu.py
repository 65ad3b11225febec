"""`make bench-gpu` runs every section end to end at tiny sizes on the CPU (`--dry-run`), and
without CUDA its real mode stops with one line."""

from __future__ import annotations

import json

import pytest
import torch

from clusterbench.perf import gpu


@pytest.mark.slow
def test_dry_run_measures_every_section_and_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBENCH_PROGRESS", "0")
    out, table = tmp_path / "gpu.json", tmp_path / "gpu.md"
    assert gpu.main(["--dry-run", "--out", str(out), "--table", str(table)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    for name in gpu.SECTIONS:
        assert "error" not in report[name], report[name].get("traceback")
    text = table.read_text()
    for loss in ("temi", "scanv2"):
        step = report["step"][loss]
        assert step["loop_fp32"]["seconds_per_step"] > 0 < step["fused_fp32"]["seconds_per_step"]
        # The table shows the JSON's numbers, not numbers of its own.
        assert f"| {loss} fused / loop, fp32 | {step['fused_over_loop_fp32']:.2f}x |" in text
    assert report["memory"]["fp32"]["peak_bytes"] > 0
    # 1000 clusters of a 1000-component mixture: far above chance (0.1 %), in-process faiss.
    assert report["faiss"]["kmeans_acc"] > 0.2 and report["faiss"]["kmeans_on_gpu"] == 0
    assert report["faiss"]["knn_same_class_fraction"] > 0.5
    assert report["extract"]["best_pipeline"] > 0
    assert "dry run" in text and "| temi fused / loop, fp32 |" in text
    assert "ImageNet-21K epoch, scanv2" in text and "spherical k-means C=1000" in text


def test_without_cuda_it_stops_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: torch sees no CUDA device") and err.count("\n") == 1
    assert not (tmp_path / "g.json").exists()
