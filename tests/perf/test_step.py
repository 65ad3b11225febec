"""`python -m clusterbench perf` at tiny sizes, and what its numbers rest on (that the fused and
the per-head steps it times compute the same: tests/methods/self_distillation/test_fused.py)."""

from __future__ import annotations

import json

import pytest
import torch

from clusterbench.perf.__main__ import main as perf_main
from clusterbench.perf.memory_probe import measure_memory
from clusterbench.perf.model import Shape, block_heads_for, memory_model, step_flops

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.slow
def test_quick_run_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    assert perf_main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] >= 1 and report["machine"]["torch"]
    assert report["gemm_flops_per_second"] > 0
    # The FLOPs the rates divide by are the model's count for the quick shape, not a guess.
    from clusterbench.perf.model import QUICK

    assert report["flops_per_step"] == pytest.approx(step_flops(QUICK))
    for loss in ("temi", "scanv2"):
        results = report["results"][loss]
        assert results["fused_speedup"] > 0
        for impl in ("fused", "loop"):
            row = results[impl]
            for key in ("seconds_per_step", "pairs_per_second", "flops_per_second"):
                assert row[key] > 0, (loss, impl, key)
            assert 0 < row["gemm_fraction"]
            assert row["memory"]["total"] >= 0 and row["memory"]["step"] >= 0
        assert results["fused"]["memory"]["allocated"]["step"] > 0
        assert results["fused_memory_model"]["total"] > 0
        assert report["lightning"][loss]["pairs_per_second"] > 0


def test_step_flops_count_every_layer():
    shape = Shape(c=10, h=2, b=3, d=5, hidden=7, bottleneck=4)
    rows = 6
    layers = [5 * 7, 7 * 4, 4 * 10]
    forward = sum(2 * rows * 2 * n for n in layers)
    flops = step_flops(shape)
    assert flops["student_forward"] == flops["teacher_forward"] == forward
    # Weight gradients of all three layers, input gradients of the last two.
    assert flops["student_backward"] == forward + 2 * rows * 2 * (layers[1] + layers[2])
    assert flops["total"] == 2 * forward + flops["student_backward"]


@pytest.mark.parametrize("loss", ["temi", "scanv2"])
def test_memory_model_matches_allocations(loss):
    """The model counts the step's peak allocations to within a few percent."""
    shape = Shape(n=256, c=1500, h=4, b=256)
    device = torch.device("cpu")
    block = 1 << 20  # one head per block here
    measured = measure_memory("fused", shape, loss, device, block_elements=block)
    model = memory_model(shape, loss, block_heads_for(shape, device, block))
    for phase in ("forward", "backward"):
        assert measured["allocated"][phase] == pytest.approx(model[phase], rel=0.03), phase
