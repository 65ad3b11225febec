"""TURTLE (Gadetsky et al., ICML 2024) as a LightningModule: the task encoder is trained so that
linear classifiers fitted to its labelling of a batch predict that labelling well.

Representation spaces s = 1..S hold row-aligned features z_s (B, d_s). The task encoder is
one weight-normalised linear map per space; its labelling of a row is the mean over spaces of
softmax(theta_s z_s) (paper Eq. 9). Each outer step:

1. labels = labelling(batch); fresh linear classifiers W_s (torch's nn.Linear initialisation)
   and a fresh Adam (cold start; `warm_start` keeps both across steps);
2. M inner Adam steps on sum_s CE(W_s z_s, labels.detach()) (the first-order hypergradient
   approximation, Eq. 13);
3. one outer Adam step on sum_s CE((W_s z_s).detach(), labels)
   - gamma * sum_s sum_c entr(mean over the batch of softmax(theta_s z_s))[c]  (Eq. 12).

All spaces run as one batched product: features arrive as (S, b, D_max) with each space
zero-padded to the widest (data.py), weights are stacked (S, D_max, C). Padded weight rows
receive exactly zero gradient (their inputs are zero, and a zero entry adds nothing to a
weight norm's gradient), so Adam, being elementwise, leaves them at zero, and one Adam over
the stacked tensors is the reference's Adam over per-space tensors.

Under DDP the batch is split across processes: the inner gradients are averaged across them,
the entropy's batch mean is the global one (`differentiable_global_mean`), and DDP's gradient
averaging turns the local cross-entropy means into the global one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from clusterbench.core.distributed import (
    all_reduce_sum,
    check_same_on_every_rank,
    differentiable_global_mean,
    world_size,
)
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import Rows, as_rows
from clusterbench.methods.turtle.data import pad_spaces, step_generator

INNER_KEY = "turtle_inner"  # the warm-started inner classifiers in a checkpoint


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-space cross-entropy with probability targets, averaged over rows.

    logits (S, b, C), targets (b, C) -> (S,): F.cross_entropy(logits[s], targets) for each s.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(targets[None] * log_probs).sum(-1).mean(-1)


class TaskEncoder(nn.Module):
    """One weight-normalised Linear(d_s, C) per space, stacked: weight_v (S, D_max, C),
    weight_g (S, C), bias (S, C); space s's weight is g * v / ||v|| (norm over inputs, per
    cluster), torch's `weight_norm(nn.Linear(d_s, C))` with its default initialisation."""

    def __init__(self, dims: list[int], num_clusters: int) -> None:
        super().__init__()
        self.dims, self.num_clusters = [int(d) for d in dims], int(num_clusters)
        num_spaces, width = len(self.dims), max(self.dims)
        self.weight_v = nn.Parameter(torch.zeros(num_spaces, width, num_clusters))
        self.weight_g = nn.Parameter(torch.zeros(num_spaces, num_clusters))
        self.bias = nn.Parameter(torch.zeros(num_spaces, num_clusters))
        with torch.no_grad():
            for s, d in enumerate(self.dims):
                linear = nn.Linear(d, num_clusters)  # torch's default init, as the reference's
                self.load_space(s, linear.weight, linear.bias)

    @torch.no_grad()
    def load_space(self, s: int, weight: Tensor, bias: Tensor, gain: Tensor | None = None) -> None:
        """Space s from a Linear's weight (C, d_s) and bias (C,); the gain defaults to the
        weight's row norms (what weight_norm starts from)."""
        d = weight.shape[1]
        self.weight_v[s].zero_()
        self.weight_v[s, :d] = weight.T
        self.weight_g[s] = weight.norm(dim=1) if gain is None else gain.reshape(-1)
        self.bias[s] = bias

    def weight(self) -> Tensor:
        """The effective weights (S, D_max, C), weight norm applied."""
        norm = self.weight_v.norm(dim=1)  # (S, C)
        return self.weight_v * (self.weight_g / norm)[:, None, :]

    def forward(self, spaces: Tensor) -> Tensor:
        """Logits (S, b, C) of padded features (S, b, D_max)."""
        return torch.baddbmm(self.bias[:, None, :], spaces, self.weight())

    def labelling(self, spaces: Tensor) -> Tensor:
        """The task's soft labels (b, C): the mean over spaces of each space's softmax."""
        return torch.softmax(self(spaces).float(), dim=-1).mean(0)

    @torch.no_grad()
    def folded(self) -> list[dict[str, Tensor]]:
        """Per space, a plain Linear's {"weight": (C, d_s), "bias": (C,)} with the weight norm
        folded in (what `remove_weight_norm` leaves)."""
        weight = self.weight()
        return [
            {"weight": weight[s, :d].T.contiguous().cpu(), "bias": self.bias[s].detach().cpu()}
            for s, d in enumerate(self.dims)
        ]


class InnerClassifiers:
    """The inner loop's linear classifiers, all spaces stacked: weight (S, D_max, C), bias
    (S, C), trained by one torch.optim.Adam (elementwise, so it equals one Adam per space)."""

    def __init__(self, dims: list[int], num_clusters: int, lr: float, device) -> None:
        self.dims, self.lr = dims, lr
        shape = (len(dims), max(dims), num_clusters)
        self.weight = torch.zeros(shape, device=device, requires_grad=True)
        self.bias = torch.zeros(shape[0], num_clusters, device=device, requires_grad=True)
        self.bound = torch.tensor([1.0 / math.sqrt(d) for d in dims], device=device)
        mask = torch.zeros(shape[:2], device=device)
        for s, d in enumerate(dims):
            mask[s, :d] = 1.0
        self.mask = mask[:, :, None]
        self.optimizer = self._adam()

    def _adam(self) -> torch.optim.Adam:
        return torch.optim.Adam([self.weight, self.bias], lr=self.lr, betas=(0.9, 0.999))

    @torch.no_grad()
    def reset(self, generator: torch.Generator | None = None, init=None) -> None:
        """Fresh classifiers and a fresh Adam. Weights and biases ~ U(-1/sqrt(d_s), 1/sqrt(d_s))
        per space (nn.Linear's default), padded rows zero; `init` = (weight, bias) instead."""
        if init is not None:
            self.weight.copy_(init[0])
            self.bias.copy_(init[1])
        else:
            device = self.weight.device
            u = torch.rand(self.weight.shape, generator=generator, device=device)
            self.weight.copy_((2 * u - 1) * self.bound[:, None, None] * self.mask)
            u = torch.rand(self.bias.shape, generator=generator, device=device)
            self.bias.copy_((2 * u - 1) * self.bound[:, None])
        self.optimizer = self._adam()

    def __call__(self, spaces: Tensor) -> Tensor:
        return torch.baddbmm(self.bias[:, None, :], spaces, self.weight)

    @torch.no_grad()
    def fit(self, spaces: Tensor, targets: Tensor, steps: int) -> None:
        """`steps` Adam steps on sum_s CE(W_s z_s, targets) (targets (b, C), rows summing to 1).

        The gradient is taken in closed form: d CE / d logits = (softmax - targets) / b, so
        dW_s = z_s^T G_s and db_s = sum_rows G_s, one batched product for all spaces (what
        autograd computes, without its graph; a test compares the two).
        """
        world = world_size()
        rows = spaces.shape[1] * world  # the global batch: its mean is the loss
        spaces_t = spaces.transpose(1, 2).contiguous()  # (S, D_max, b), once per outer step
        for _ in range(steps):
            probs = torch.softmax(self(spaces).float(), dim=-1)
            g = probs - targets[None]  # (S, b, C); divided by the rows after the product,
            # so a half-precision product (autocast) sees no tiny values
            grad_w = torch.bmm(spaces_t, g.to(spaces.dtype)).float() / rows
            grad_b = g.sum(1) / rows
            if world > 1:  # sum of every process's share of the global mean's gradient
                grad_w, grad_b = all_reduce_sum(grad_w), all_reduce_sum(grad_b)
            self.weight.grad, self.bias.grad = grad_w, grad_b
            self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight.detach().clone(),
            "bias": self.bias.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.weight.copy_(state["weight"])
            self.bias.copy_(state["bias"])
        self.optimizer = self._adam()
        self.optimizer.load_state_dict(state["optimizer"])


class TurtleClustering(L.LightningModule):
    """The task encoder and its training (manual optimisation: an inner loop per step).

    Args:
        dims: the feature dimension of every representation space (store first).
        num_clusters: C.
        gamma: weight of the entropy regulariser (Eq. 12).
        M: inner Adam steps per outer step.
        inner_lr, outer_lr: Adam learning rates of the inner classifiers / the task encoder.
        warm_start: keep the inner classifiers and their Adam across outer steps.
        seed: seeds the cold-start initialisation of every step.
    """

    def __init__(
        self,
        dims: list[int],
        num_clusters: int,
        gamma: float = 10.0,
        M: int = 10,
        inner_lr: float = 1e-3,
        outer_lr: float = 1e-3,
        warm_start: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_clusters < 2:
            raise ConfigError(f"num_clusters must be >= 2, got {num_clusters}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.dims, self.num_clusters = [int(d) for d in dims], int(num_clusters)
        self.gamma, self.M = float(gamma), int(M)
        self.inner_lr, self.outer_lr = float(inner_lr), float(outer_lr)
        self.warm_start, self.seed = bool(warm_start), int(seed)
        self.encoder = TaskEncoder(self.dims, self.num_clusters)
        self.inner: InnerClassifiers | None = None
        self._inner_state: dict[str, Any] | None = None  # loaded from a checkpoint
        self.last: dict[str, Tensor] = {}
        self.timing: dict[str, float] = {}  # wall clock of the first and the latest step

    def forward(self, spaces: Tensor) -> Tensor:
        """Soft labels (b, C) of padded features (S, b, D_max)."""
        return self.encoder.labelling(spaces)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.encoder.parameters(), lr=self.outer_lr, betas=(0.9, 0.999))

    def setup(self, stage: str) -> None:
        check_same_on_every_rank(self.num_clusters, "method.num_clusters")

    def _inner_for(self, device: torch.device) -> InnerClassifiers:
        if self.inner is None or self.inner.weight.device != device:
            self.inner = InnerClassifiers(self.dims, self.num_clusters, self.inner_lr, device)
            if self._inner_state is not None:
                self.inner.load_state_dict(self._inner_state)
                self._inner_state = None
            elif self.warm_start:  # the first step's classifiers, then kept
                self.inner.reset(step_generator(self.seed, 0, 1, device))
        return self.inner

    def outer_loss(self, spaces: Tensor, step: int, inner_init=None) -> Tensor:
        """Runs the inner loop and returns the outer loss of one batch (S, b, D_max).

        `inner_init` = (weight (S, D_max, C), bias (S, C)) replaces a cold start's random
        initialisation (tests compare against a per-space loop from the same start).
        """
        inner = self._inner_for(spaces.device)
        probs = torch.softmax(self.encoder(spaces).float(), dim=-1)  # (S, b, C)
        labels = probs.mean(0)  # (b, C), Eq. 9
        if not self.warm_start or inner_init is not None:
            inner.reset(step_generator(self.seed, step, 1, spaces.device), init=inner_init)
        inner.fit(spaces, labels.detach(), self.M)
        with torch.no_grad():
            inner_logits = inner(spaces)
        pred_error = soft_cross_entropy(inner_logits, labels).sum()
        marginal = differentiable_global_mean(probs, dim=1)  # (S, C) over the global batch
        entropy = torch.special.entr(marginal).sum()
        recorded = pred_error.detach()
        if world_size() > 1:  # the global batch's, as the entropy (equal shards)
            recorded = all_reduce_sum(recorded.clone()) / world_size()
        self.last = {"pred_error": recorded, "entropy": entropy.detach()}
        return pred_error - self.gamma * entropy

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        loss = self.outer_loss(batch["spaces"], self.global_step)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self._tick()
        n = batch["spaces"].shape[1]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/pred_error", self.last["pred_error"], batch_size=n)
        self.log("train/entropy", self.last["entropy"], batch_size=n)
        return loss.detach()

    def _tick(self) -> None:
        """Step timing for `steps_per_second` (this process's steps after its first)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timing.setdefault("first", now)
        self.timing["steps"] = self.timing.get("steps", -1) + 1
        self.timing["last"] = now

    def steps_per_second(self) -> float | None:
        """Outer steps per second after the first step (None before two steps)."""
        steps = self.timing.get("steps", 0)
        seconds = self.timing.get("last", 0.0) - self.timing.get("first", 0.0)
        return steps / seconds if steps and seconds > 0 else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.warm_start and self.inner is not None:
            checkpoint[INNER_KEY] = self.inner.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._inner_state = checkpoint.get(INNER_KEY)
        self.inner = None


@torch.no_grad()
def labellings(
    encoder: TaskEncoder,
    spaces: list[Rows | Tensor],
    batch_size: int = 65536,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """(first row, (m, C) mean softmax over spaces) per chunk of row-aligned spaces: no split
    is ever read whole."""
    if device is not None:
        encoder.to(device)
    device = encoder.bias.device
    spaces = [as_rows(s) for s in spaces]
    n, width = len(spaces[0]), max(encoder.dims)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        blocks = [torch.as_tensor(s.chunk(start, stop)).to(device, torch.float32) for s in spaces]
        yield start, encoder.labelling(pad_spaces(blocks, width))


__all__ = [
    "InnerClassifiers",
    "TaskEncoder",
    "TurtleClustering",
    "labellings",
    "soft_cross_entropy",
]
