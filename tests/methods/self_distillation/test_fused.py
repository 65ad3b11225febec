"""The fused heads and kernel equal the per-head reference implementation
(`reference.PerHeadLoop`): the same losses, prior and gradients, with and without head chunks."""

from __future__ import annotations

import pytest
import torch

from clusterbench.methods.self_distillation.reference import PerHeadLoop
from clusterbench.perf.model import Shape
from clusterbench.perf.step import Data, FusedStep, make_step

TINY = Shape(n=200, d=16, c=7, h=3, b=8, hidden=24, bottleneck=8, knn=5)


pytestmark = pytest.mark.usefixtures("single_thread")


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
    reference = PerHeadLoop(fused.model)  # the model's state as per-head loops (copied)
    assert isinstance(fused, FusedStep)
    batch = data.batch()
    got = fused.losses(*batch)
    expected = reference.losses(*batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.model.prior, reference.prior)
    student = fused.model.student
    for h, head in enumerate(reference.student):
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
