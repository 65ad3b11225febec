"""The straightforward per-head implementation that the fused heads and kernel must equal.

One `nn.Sequential` per head (its last layer weight-normed by
`torch.nn.utils.parametrizations.weight_norm`), the heads run one after the other with autograd
through `temi_loss` / `scan_loss`. Tests compare the fused module with it (forward, losses,
gradients), and `python -m clusterbench perf` times it beside the fused step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from clusterbench.methods.self_distillation.losses import (
    scan_loss,
    temi_instance_weight,
    temi_loss,
    update_prior,
)
from clusterbench.methods.self_distillation.module import SelfDistillationClustering


class L2Normalize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


def loop_heads(heads) -> nn.ModuleList:
    """One nn.Sequential per head with the weights of `FusedHeads` `heads` (copied)."""
    out = nn.ModuleList()
    for h in range(heads.num_heads):
        layers: list[nn.Module] = []
        for i, layer in enumerate(heads.mlp):
            lin = nn.Linear(*layer.weight.shape[1:], device=layer.weight.device)
            with torch.no_grad():
                lin.weight.copy_(layer.weight[h].T)
                lin.bias.copy_(layer.bias[h])
            layers.append(lin)
            if i < len(heads.mlp) - 1:
                layers.append(nn.GELU())
        layers.append(L2Normalize())
        in_dim, out_dim = heads.last_layer.weight_v.shape[1:]
        last = nn.Linear(in_dim, out_dim, bias=False, device=heads.last_layer.weight_v.device)
        last = weight_norm(last)
        with torch.no_grad():
            params = last.parametrizations.weight
            params.original0.copy_(heads.last_layer.weight_g[h][:, None])
            params.original1.copy_(heads.last_layer.weight_v[h].T)
        layers.append(last)
        out.append(nn.Sequential(*layers))
    return out


class PerHeadLoop:
    """A `SelfDistillationClustering`'s state (weights, temperatures, prior) as per-head loops.

    `losses` back-propagates each head's loss / H right away; `param_groups` decays as the
    reference does (every parameter with ndim > 1, so the (C, 1) gain too, no biases).
    """

    def __init__(self, model: SelfDistillationClustering) -> None:
        self.loss_name = model.loss_name
        self.num_heads, self.num_clusters = model.num_heads, model.num_clusters
        self.student_temp, self.teacher_temp = model.student_temp, model.teacher_temperature()
        self.beta, self.alpha, self.prior_momentum = model.beta, model.alpha, model.prior_momentum
        self.weight_decay = model.weight_decay
        self.input_norm = model.input_norm
        self.prior = model.prior.clone()
        self.student = loop_heads(model.student)
        self.teacher = loop_heads(model.teacher.module).requires_grad_(False)

    def param_groups(self) -> list[dict]:
        decay, no_decay = [], []
        for name, param in self.student.named_parameters():
            (no_decay if name.endswith("bias") or param.ndim == 1 else decay).append(param)
        return [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def losses(self, anchors: Tensor, neighbours: Tensor, bf16: bool = False) -> Tensor:
        """Per-head losses (H,); each head's loss / H is back-propagated right away."""
        b, c = anchors.shape[0], self.num_clusters
        x = self.input_norm(torch.cat([anchors, neighbours]))
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)

        def teacher_log_probs(h: int) -> Tensor:
            with torch.no_grad(), autocast:
                logits = self.teacher[h](x).float() / self.teacher_temp
                return F.log_softmax(logits, dim=-1).view(1, 2, b, c)

        teacher: list[Tensor] = []
        weight = None
        if self.loss_name == "temi":
            with torch.no_grad():
                teacher = [teacher_log_probs(h) for h in range(self.num_heads)]
                probs = [t.exp() for t in teacher]
                weight = torch.stack([temi_instance_weight(p) for p in probs]).mean(dim=0)
                batch_mean = torch.cat([p.mean(dim=(1, 2)) for p in probs])
                self.prior = update_prior(self.prior, batch_mean, self.prior_momentum)
                del probs
        out = []
        for h, head in enumerate(self.student):
            teacher_h = teacher[h] if teacher else teacher_log_probs(h)
            with autocast:
                logits = head(x).float() / self.student_temp
                log_ps = F.log_softmax(logits, dim=-1).view(1, 2, b, c)
                if self.loss_name == "temi":
                    prior = self.prior[h : h + 1]
                    loss = temi_loss(log_ps, teacher_h, prior, self.beta, weight)
                else:
                    loss = scan_loss(log_ps, teacher_h, self.alpha)
            (loss.sum() / self.num_heads).backward()
            out.append(loss.detach())
        return torch.cat(out)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        torch._foreach_lerp_(
            list(self.teacher.parameters()), list(self.student.parameters()), 1.0 - momentum
        )
