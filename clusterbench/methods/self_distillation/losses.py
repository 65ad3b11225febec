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
from torch import Tensor

from clusterbench.core.distributed import (
    all_reduce_sum,
    differentiable_global_mean,
    distributed_mean,
    world_size,
)


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


# --------------------------------------------------------------------------- fused blocks
# The functions below evaluate the same losses on a block of heads straight from tempered
# logits and return the gradient with respect to those logits in closed form, so the training
# step needs no autograd graph (and no saved copies) of the (H, 2, B, C) tensors. They are
# checked against `temi_loss` / `scan_loss` + autograd in the tests.


def softmax_stats(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the last axis and the log-normaliser (logsumexp), with one exp pass.

    logits: (..., C) -> probs (..., C) in a new tensor, lse (..., 1). The log-normaliser comes
    from the largest probability, lse = max(logits) - log(max(probs)), where max(probs) >= 1/C
    keeps it exact to float precision; torch's softmax kernel is faster than any composition.
    """
    probs = torch.softmax(logits, dim=-1)
    top = logits.amax(dim=-1, keepdim=True)
    return probs, top.sub_(probs.amax(dim=-1, keepdim=True).log_())


def temi_block(
    student_logits: Tensor,
    teacher_logits: Tensor,
    teacher_lse: Tensor,
    log_prior: Tensor,
    weight: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """TEMI loss (Eq. 1) of a block of heads and its gradient, from tempered logits.

    student_logits: (h, 2, B, C) student logits a over the student temperature; overwritten
    teacher_logits: (h, 2, B, C) teacher logits t' over its temperature with the views swapped,
                    so [:, v] is the teacher on the partner of the student's view v
    teacher_lse:    (h, 2, B, 1) their logsumexp
    log_prior:      (h, C) log q~_t(c); weight: (B,) pair weights
    returns:        loss (h,) equal to `temi_loss`, and its gradient w.r.t. a (h, 2, B, C)

    With u = beta (a + t') - log prior: pmi = lse(u) - beta (lse(a) + lse(t')), and the
    gradient w.r.t. a is beta w_b / (2B) (softmax(a) - softmax(u)).
    """
    b = student_logits.shape[2]
    probs, lse_s = softmax_stats(student_logits)
    u = student_logits.add_(teacher_logits)
    torch.add(-log_prior[:, None, None, :], u, alpha=beta, out=u)  # beta (a + t') - log prior
    probs_u, lse_u = softmax_stats(u)
    pmi = (lse_u - beta * (lse_s + teacher_lse))[..., 0]  # (h, 2, B)
    loss = -(pmi * weight).sum(dim=(1, 2)) / (2 * b)
    grad = probs.sub_(probs_u).mul_((beta / (2 * b)) * weight[:, None])
    return loss, grad


def scan_block(
    student_logits: Tensor,
    teacher_logits: Tensor,
    teacher_lse: Tensor,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """SCANv2 loss (Eq. 2) of a block of heads and its gradient, from tempered logits.

    Arguments and returns as in `temi_block`; the loss equals `scan_loss`.
    With r = softmax(a + t'), p = softmax(a) and l = log of the batch-mean p of each view:
    the consistency gradient is (p - r) / (2B) and the entropy gradient
    alpha / (2B) p (l - <p, l>) (scaled for the global batch when distributed).
    """
    b = student_logits.shape[2]
    probs, lse_s = softmax_stats(student_logits)
    # Batch-mean student distribution of each view over the global batch.
    packed = torch.cat([probs.sum(dim=2).reshape(-1), probs.new_tensor([float(b)])])
    all_reduce_sum(packed)
    count = packed[-1]
    marginal = (packed[:-1] / count).view(probs.shape[0], 2, -1)  # (h, 2, C)
    log_marginal = marginal.clamp_min(1e-30).log()
    neg_entropy = (marginal * log_marginal).sum(dim=-1)  # (h, 2)
    # d(m log m)/dm as autograd takes it through clamp_min; the constant 1 cancels in the
    # softmax Jacobian but is kept so that rows at the clamp match exactly. Each process
    # holds b of `count` rows, and DDP averages the gradients over processes.
    world = world_size()
    slope = log_marginal + (marginal >= 1e-30).to(marginal.dtype)
    slope = slope * (alpha * world * b / count)
    # (h, 2, B, 1): <p, slope>, as multiply-and-sum (4x faster on a CPU than a batched
    # matrix-vector product), before softmax(u) exists, so its temporary adds no peak memory.
    mean_slope = (probs * slope[:, :, None, :]).sum(dim=-1, keepdim=True)

    u = student_logits.add_(teacher_logits)
    probs_u, lse_u = softmax_stats(u)
    consistency = -(lse_u - lse_s - teacher_lse)[..., 0]  # (h, 2, B)
    loss = consistency.mean(dim=(1, 2)) + alpha * neg_entropy.mean(dim=1)

    scale = 1.0 / (2 * b)
    # (p (1 + slope - <p, slope>) - r) / (2B), built in the buffer of softmax(u).
    grad = probs_u.mul_(-scale)
    grad.addcmul_(probs, (slope + 1.0)[:, :, None, :], value=scale)
    grad.addcmul_(probs, mean_slope, value=-scale)
    return loss, grad
