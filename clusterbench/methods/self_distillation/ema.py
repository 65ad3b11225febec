"""Momentum (EMA) teacher: a frozen copy of the student, updated after each optimiser step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MomentumTeacher(nn.Module):
    """Holds the teacher as a submodule so that checkpoints save and restore it.

    teacher <- momentum * teacher + (1 - momentum) * student, for every parameter, done as one
    fused multi-tensor update rather than a Python loop over heads.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        for param in self.module.parameters():
            param.requires_grad_(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        teacher_params = list(self.module.parameters())
        student_params = [p.detach() for p in student.parameters()]
        if len(teacher_params) != len(student_params):
            raise ValueError("teacher and student have different parameter lists")
        if momentum < 1.0:
            torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)
