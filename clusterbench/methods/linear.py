"""Stacked linear layers: S independent Linear maps as one (S, in, out) weight, so a forward
over all of them is one batched product, and the per-member SGD that trains them together.

The clustering heads (`self_distillation/heads.py`: H heads of an MLP), the linear-probe grid
(`producers/probe/grid.py`: one probe per lr x weight-decay cell) and linear learners of
future methods share this one implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StackedLinear(nn.Module):
    """S Linear layers in -> out: weight (S, in, out), bias (S, out), zero bias.

    Weights start truncated-normal with `init_std`, independently per member; with
    `shared_seed`, one N(0, init_std) draw from that seed is shared by every member (probe
    cells then differ only in their hyper-parameters).
    """

    def __init__(
        self,
        num_stacked: int,
        in_dim: int,
        out_dim: int,
        init_std: float = 0.02,
        shared_seed: int | None = None,
    ) -> None:
        super().__init__()
        if shared_seed is None:
            self.weight = nn.Parameter(torch.empty(num_stacked, in_dim, out_dim))
            nn.init.trunc_normal_(self.weight, std=init_std)
        else:
            generator = torch.Generator().manual_seed(shared_seed)
            init = torch.randn(in_dim, out_dim, generator=generator)
            self.weight = nn.Parameter((init_std * init).expand(num_stacked, -1, -1).clone())
        self.bias = nn.Parameter(torch.zeros(num_stacked, out_dim))

    @property
    def num_stacked(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: Tensor, members: slice = slice(None)) -> Tensor:
        """x: (M, in) shared by all members, or (s, M, in) per member -> (s, M, out)."""
        weight, bias = self.weight, self.bias
        if members != slice(None):  # slicing all would cost a zero-filled copy in backward
            weight, bias = weight[members], bias[members]
        if x.dim() == 2:  # a stride-0 batch: no copy of x, one batched GEMM with the bias
            x = x.expand(weight.shape[0], *x.shape)
        return torch.baddbmm(bias[:, None, :], x, weight)


class StackedSGD:
    """torch.optim.SGD's update (momentum, dampening 0, no Nesterov, coupled weight decay)
    with a learning rate and weight decay per member, on stacked parameters.

    It is exactly one torch.optim.SGD param group per member (a test checks it), applied as a
    few tensor operations over all members instead of S groups of per-tensor kernel launches.
    """

    def __init__(
        self, params: list[Tensor], lrs: list[float], weight_decays: list[float], momentum: float
    ) -> None:
        self.params = params
        device = params[0].device
        self.lrs = torch.tensor(lrs, dtype=torch.float32, device=device)
        self.weight_decays = torch.tensor(weight_decays, dtype=torch.float32, device=device)
        self.momentum = momentum
        self.buffers = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr_scale: float = 1.0) -> None:
        """One update; adds the weight decay into `.grad` in place (no weight-sized temporary)."""
        for param, buf in zip(self.params, self.buffers, strict=True):
            shape = (-1,) + (1,) * (param.dim() - 1)
            grad = param.grad.addcmul_(self.weight_decays.view(shape), param)
            buf.mul_(self.momentum).add_(grad)
            param.addcmul_(self.lrs.view(shape), buf, value=-lr_scale)
