"""Self-distillation clustering losses: TEMI (paper Eq. 1) and SCANv2 (paper Eq. 2).

Pure functions, vectorised over heads. Shape letters used below:
    H heads, B pairs, C clusters, and a views axis of size 2 where index 0 is the
    anchor x and index 1 its sampled neighbour x'.
Student and teacher enter as log-probabilities: the pointwise terms are then evaluated in
log space with `logsumexp`, which stays finite for beta < 1 and near one-hot teachers.
Batch means (the TEMI prior update, the SCAN marginal) are taken over all processes when
torch.distributed is initialised, so a DDP run computes what one process with the global batch
would; without a process group every function is pure.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` in place across processes when running distributed; returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def distributed_mean(total: Tensor, count: int) -> Tensor:
    """Global mean from a local sum over `count` rows, so that DDP equals one large batch.

    total: (...) local sum; count: rows summed on this process. One collective call.
    """
    packed = torch.cat([total.reshape(-1), total.new_tensor([float(count)])])
    all_reduce_sum(packed)
    return (packed[:-1] / packed[-1]).reshape(total.shape)


class _AllReduceSum(torch.autograd.Function):
    """Sum across processes whose backward also sums, so every process's rows get gradient."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return all_reduce_sum(grad.clone())


def differentiable_global_mean(values: Tensor, dim: int) -> Tensor:
    """Mean over `dim` across all processes, differentiable.

    Under DDP's gradient averaging this gives exactly the gradient of one process that holds
    the global batch (each rank's share of the backward sum is scaled back by the averaging).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return values.mean(dim=dim)
    count = all_reduce_sum(values.new_tensor([float(values.shape[dim])]))
    return _AllReduceSum.apply(values.sum(dim=dim)) / count


def batch_mean_probs(teacher_probs: Tensor) -> Tensor:
    """Mean teacher distribution of each head over all views and pairs (all ranks).

    teacher_probs: (H, ..., C) -> (H, C)
    """
    h, c = teacher_probs.shape[0], teacher_probs.shape[-1]
    rows = teacher_probs.reshape(h, -1, c)  # (H, M, C)
    return distributed_mean(rows.sum(dim=1), rows.shape[1])


def update_prior(prior: Tensor, batch_mean: Tensor, momentum: float = 0.9) -> Tensor:
    """EMA estimate of the teacher cluster marginal, q~_t(c) in Eq. 1.

    prior, batch_mean: (H, C) -> (H, C). Called before the loss of the same batch.
    """
    return prior * momentum + batch_mean * (1.0 - momentum)


def temi_instance_weight(teacher_probs: Tensor) -> Tensor:
    """Pair weight of Eq. 1: teacher agreement of x and x', averaged over heads.

    teacher_probs: (H, 2, B, C) -> (B,). Shared by every head's loss; never differentiated.
    """
    return (teacher_probs[:, 0] * teacher_probs[:, 1]).sum(dim=-1).mean(dim=0)


def temi_loss(
    student_log_probs: Tensor,
    teacher_log_probs: Tensor,
    prior: Tensor,
    beta: float = 0.6,
    weight: Tensor | None = None,
) -> Tensor:
    """Symmetrised TEMI loss (Eq. 1) of every head.

    student_log_probs: (H, 2, B, C) log q_s(c|.) of (x, x')
    teacher_log_probs: (H, 2, B, C) log q_t(c|.) of (x, x'); treated as constants
    prior:             (H, C) q~_t(c), already updated with this batch
    weight:            (B,) pair weights; computed from these teacher heads when None,
                       pass it explicitly when the heads are processed in chunks
    returns:           (H,) per-head loss, each the mean over pairs and both directions
    """
    teacher_log_probs = teacher_log_probs.detach()
    if weight is None:
        weight = temi_instance_weight(teacher_log_probs.exp())
    weight = weight.detach()
    log_prior = prior.detach().log()[:, None, :]  # (H, 1, C)

    def direction(s: int, t: int) -> Tensor:  # student on view s, teacher on view t
        pmi = torch.logsumexp(
            beta * (student_log_probs[:, s] + teacher_log_probs[:, t]) - log_prior, dim=-1
        )  # (H, B)
        return -(weight * pmi).mean(dim=-1)  # (H,)

    return 0.5 * (direction(0, 1) + direction(1, 0))


def scan_loss(student_log_probs: Tensor, teacher_log_probs: Tensor, alpha: float = 5.0) -> Tensor:
    """Symmetrised SCANv2 loss (Eq. 2) of every head.

    student_log_probs, teacher_log_probs: (H, 2, B, C) as in `temi_loss`
    returns: (H,) consistency term averaged over both directions, plus alpha times the
             negative entropy of the batch-mean student distribution averaged over both views
    When distributed, the batch mean is over the global batch, as in a single process.
    """
    teacher_log_probs = teacher_log_probs.detach()
    consistency = -torch.logsumexp(
        student_log_probs + teacher_log_probs.flip(dims=(1,)), dim=-1
    )  # (H, 2, B): view v of the student against the other view of the teacher
    marginal = differentiable_global_mean(student_log_probs.exp(), dim=2)  # (H, 2, C)
    neg_entropy = (marginal * marginal.clamp_min(1e-30).log()).sum(dim=-1)  # (H, 2)
    return consistency.mean(dim=(1, 2)) + alpha * neg_entropy.mean(dim=1)
