"""The two objectives as objects chosen once, at construction: each turns one step's teacher
logits into the per-block loss (and its closed-form gradient) that the fused last layer calls.

    ScanObjective  Eq. 2: consistency plus alpha times the negative entropy of the marginal
    TemiObjective  Eq. 1: needs a pass over every head's teacher logits first, because the
                   pair weight averages all heads and the prior update precedes the loss
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clusterbench.core.distributed import distributed_mean
from clusterbench.methods.self_distillation.fused import bmm_in
from clusterbench.methods.self_distillation.heads import l2_normalize
from clusterbench.methods.self_distillation.losses import (
    scan_block,
    softmax_stats,
    temi_block,
    temi_instance_weight,
    update_prior,
)

BlockLoss = Callable[[slice, Tensor], tuple[Tensor, Tensor]]


class TeacherLogits:
    """One step's teacher logits over the temperature, (h, 2, B, C), a block of heads at a time.

    h_t: the teacher's bottleneck features (H, 2B, K) of the views swapped (row i is the partner
    of the student's row i); scale: g / (||v|| * temperature) per head and cluster (H, C).
    """

    def __init__(self, h_t: Tensor, weight_v: Tensor, scale: Tensor, dtype: torch.dtype) -> None:
        self.h_t, self.weight_v, self.scale, self.dtype = h_t, weight_v, scale, dtype
        self.b, self.c = h_t.shape[1] // 2, weight_v.shape[-1]

    @torch.no_grad()
    def __call__(self, heads: slice) -> Tensor:
        z, _ = l2_normalize(self.h_t[heads].float())
        weight = self.weight_v[heads] * self.scale[heads][:, None, :]
        return bmm_in(z, weight, self.dtype).view(-1, 2, self.b, self.c)


class ScanObjective:
    name = "scanv2"

    def __init__(self, alpha: float = 5.0) -> None:
        self.alpha = alpha

    def block_loss(
        self, teacher: TeacherLogits, blocks: list[slice], keep: bool, prior: Tensor
    ) -> BlockLoss:
        def loss(heads: slice, student: Tensor) -> tuple[Tensor, Tensor]:
            logits = teacher(heads)
            return scan_block(student, logits, softmax_stats(logits)[1], self.alpha)

        return loss

    def logs(self, prior: Tensor) -> dict[str, Tensor]:
        return {}


class TemiObjective:
    """`prior` is the cluster prior q~_t(c) of Eq. 1, (H, C): a buffer of the module (so
    checkpoints restore it), updated in place before the loss."""

    name = "temi"

    def __init__(self, beta: float = 0.6, prior_momentum: float = 0.9) -> None:
        self.beta, self.prior_momentum = beta, prior_momentum

    def block_loss(
        self, teacher: TeacherLogits, blocks: list[slice], keep: bool, prior: Tensor
    ) -> BlockLoss:
        """The prior pass, then the loss; `keep` holds every head's teacher logits between the
        two instead of recomputing them (when all heads fit in one chunk)."""
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        num_heads, b = prior.shape[0], teacher.b
        with torch.no_grad():
            weight = teacher.h_t.new_zeros(b, dtype=torch.float32)
            prob_sum = teacher.h_t.new_zeros(num_heads, teacher.c, dtype=torch.float32)
            for heads in blocks:
                logits = teacher(heads)
                probs, lse = softmax_stats(logits)
                prob_sum[heads] = probs.sum(dim=(1, 2))
                weight += temi_instance_weight(probs) * (probs.shape[0] / num_heads)
                if keep:
                    cache[heads.start] = (logits, lse)
                del probs, logits, lse  # no stale block stays alive through the next pass
            batch_mean = distributed_mean(prob_sum, 2 * b)
            prior.copy_(update_prior(prior, batch_mean, self.prior_momentum))
            log_prior = prior.log()

        def loss(heads: slice, student: Tensor) -> tuple[Tensor, Tensor]:
            if cache:
                logits, lse = cache.pop(heads.start)
            else:
                logits = teacher(heads)
                lse = softmax_stats(logits)[1]
            return temi_block(student, logits, lse, log_prior[heads], weight, self.beta)

        return loss

    def logs(self, prior: Tensor) -> dict[str, Tensor]:
        entropy = -(prior * prior.clamp_min(1e-30).log()).sum(dim=-1)
        return {"train/prior_entropy": entropy.mean()}
