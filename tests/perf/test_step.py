"""`python -m clusterbench perf` at tiny sizes, and what its numbers rest on."""

from __future__ import annotations

import json

import pytest
import torch

from clusterbench.perf.__main__ import main as perf_main
from clusterbench.perf.memory_probe import measure_memory
from clusterbench.perf.model import Shape, block_heads_for, memory_model, step_flops
from clusterbench.perf.step import Data, FusedStep, LoopStep, make_step

TINY = Shape(n=200, d=16, c=7, h=3, b=8, hidden=24, bottleneck=8, knn=5)


pytestmark = pytest.mark.usefixtures("single_thread")


def test_quick_run_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    assert perf_main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] >= 1 and report["machine"]["torch"]
    assert report["gemm_flops_per_second"] > 0
    assert report["flops_per_step"]["total"] > 0
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


@pytest.mark.parametrize("loss", ["temi", "scanv2"])
@pytest.mark.parametrize("head_chunk", [None, 2])
def test_fused_and_loop_steps_compute_the_same(loss, head_chunk):
    """Same losses, gradients and updated weights: the benchmark compares like with like, and
    the fused step's closed-form gradients equal autograd through `temi_loss` / `scan_loss`."""
    torch.manual_seed(0)
    shape = Shape(**{**TINY.__dict__, "head_chunk": head_chunk})
    device = torch.device("cpu")
    data = Data(shape, device)
    fused = make_step("fused", shape, loss, device, data)
    with torch.no_grad():  # away from the initialisation, trainable gains included
        for param in fused.model.student.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    loop = LoopStep(fused.model, data)
    assert isinstance(fused, FusedStep)
    batch = data.batch()
    got = fused.losses(*batch)
    expected = loop.losses(*batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.model.prior, loop.reference.prior)
    student = fused.model.student
    for h, head in enumerate(loop.reference.student):
        first, second = head[0], head[2]
        torch.testing.assert_close(student.mlp[0].weight.grad[h], first.weight.grad.T)
        torch.testing.assert_close(student.mlp[1].bias.grad[h], second.bias.grad)
        last = head[-1].parametrizations.weight
        torch.testing.assert_close(
            student.last_layer.weight_v.grad[h], last.original1.grad.T, rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(
            student.last_layer.weight_g.grad[h], last.original0.grad[:, 0], rtol=1e-4, atol=1e-6
        )


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
