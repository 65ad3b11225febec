"""FusedHeads equals H separate DINO-style heads; EMA teacher, input norm, decay groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clusterbench.methods.self_distillation.ema import MomentumTeacher
from clusterbench.methods.self_distillation.heads import FusedHeads, InputNorm, weight_decay_groups
from clusterbench.methods.self_distillation.losses import scan_loss, temi_instance_weight, temi_loss
from clusterbench.methods.self_distillation.reference import loop_heads


def per_head_modules(fused: FusedHeads) -> nn.ModuleList:
    """The straightforward implementation: one nn.Sequential per head, weights copied."""
    return loop_heads(fused)


def _randomise_gains(fused: FusedHeads) -> None:
    with torch.no_grad():
        fused.last_layer.weight_g.uniform_(0.5, 2.0)  # exercise the trainable gain
        for layer in fused.mlp:
            layer.bias.normal_(0, 0.1)


@pytest.mark.parametrize("num_hidden_layers", [0, 1, 2])
def test_fused_forward_equals_per_head_loop(num_hidden_layers):
    torch.manual_seed(0)
    fused = FusedHeads(
        12, 5, num_heads=3, hidden_dim=16, bottleneck_dim=8, num_hidden_layers=num_hidden_layers
    )
    _randomise_gains(fused)
    loop = per_head_modules(fused)
    x = torch.randn(7, 12)
    expected = torch.stack([head(x) for head in loop])
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
    # Any contiguous range of heads alone gives the same logits.
    torch.testing.assert_close(fused(x, slice(1, 3)), expected[1:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_name", ["temi", "scanv2"])
def test_fused_loss_and_gradients_equal_per_head_loop(loss_name):
    torch.manual_seed(0)
    h, b, c, d = 4, 6, 5, 10
    fused = FusedHeads(d, c, num_heads=h, hidden_dim=16, bottleneck_dim=8)
    _randomise_gains(fused)
    loop = per_head_modules(fused)
    x = torch.randn(2 * b, d)  # anchors then neighbours
    teacher_logp = torch.log_softmax(torch.randn(h, 2, b, c), dim=-1)
    prior = torch.softmax(torch.randn(h, c), dim=-1)
    weight = temi_instance_weight(teacher_logp.exp())

    def loss_of(logits: torch.Tensor, heads: slice) -> torch.Tensor:
        logp = torch.log_softmax(logits / 0.1, dim=-1).view(-1, 2, b, c)
        if loss_name == "temi":
            return temi_loss(logp, teacher_logp[heads], prior[heads], 0.6, weight)
        return scan_loss(logp, teacher_logp[heads], 5.0)

    fused_losses = loss_of(fused(x), slice(None))
    loop_losses = torch.cat(
        [loss_of(head(x)[None], slice(i, i + 1)) for i, head in enumerate(loop)]
    )
    torch.testing.assert_close(fused_losses, loop_losses, rtol=1e-5, atol=1e-6)

    fused_losses.mean().backward()
    loop_losses.mean().backward()
    for i, head in enumerate(loop):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        for layer, lin in zip(fused.mlp, linears[:-1], strict=True):
            torch.testing.assert_close(
                layer.weight.grad[i], lin.weight.grad.T, rtol=1e-4, atol=1e-7
            )
            torch.testing.assert_close(layer.bias.grad[i], lin.bias.grad, rtol=1e-4, atol=1e-7)
        param = linears[-1].parametrizations.weight
        torch.testing.assert_close(
            fused.last_layer.weight_g.grad[i], param.original0.grad[:, 0], rtol=1e-4, atol=1e-7
        )
        torch.testing.assert_close(
            fused.last_layer.weight_v.grad[i], param.original1.grad.T, rtol=1e-4, atol=1e-7
        )


def test_init_and_head_slices():
    torch.manual_seed(0)
    fused = FusedHeads(64, 7, num_heads=5, hidden_dim=128, bottleneck_dim=32)
    w = fused.mlp[0].weight
    assert w.shape == (5, 64, 128) and w.abs().max() <= 2.0  # truncated normal
    assert abs(w.std().item() - 0.02) < 0.003
    assert torch.all(fused.mlp[0].bias == 0) and torch.all(fused.last_layer.weight_g == 1)
    assert fused.last_layer.weight_g.requires_grad
    assert fused.head_slices(None) == [slice(0, 5)]
    assert fused.head_slices(2) == [slice(0, 2), slice(2, 4), slice(4, 5)]


def test_weight_decay_on_matrices_and_gains_not_biases():
    # As the reference's get_params_groups: its weight-norm gain is (C, 1), so it is decayed.
    fused = FusedHeads(8, 3, num_heads=2, hidden_dim=4, bottleneck_dim=4)
    decay, no_decay = weight_decay_groups(fused.named_parameters(), 1e-4)
    names = {id(p): n for n, p in fused.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "last_layer.weight_g",
        "last_layer.weight_v",
        "mlp.0.weight",
        "mlp.1.weight",
    ]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["mlp.0.bias", "mlp.1.bias"]
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_momentum_teacher_update():
    torch.manual_seed(0)
    student = FusedHeads(4, 3, num_heads=2, hidden_dim=4, bottleneck_dim=4)
    teacher = MomentumTeacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, momentum=1.0)
    for old, new in zip(before, teacher.module.parameters(), strict=True):
        torch.testing.assert_close(old, new)
    teacher.update(student, momentum=0.75)
    for old, new, s in zip(before, teacher.module.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * s)


def test_input_norm_modes():
    x = torch.randn(50, 6) * 3 + 2
    norm = InputNorm(6, "standardize")
    assert norm.needs_statistics
    norm.fit(x.split(16))
    assert not norm.needs_statistics
    y = norm(x.half())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)
    torch.testing.assert_close(InputNorm(6, "l2")(x).norm(dim=-1), torch.ones(50))
    torch.testing.assert_close(InputNorm(6, "none")(x), x)
    with pytest.raises(ValueError):
        InputNorm(6, "whiten")
