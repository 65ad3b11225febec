"""H clustering heads evaluated together as batched matrix products.

Each head is DINO's projection head with a weight-normalised last layer:
    Linear(D, hidden) -> GELU -> ... -> Linear(hidden, bottleneck) -> L2-normalise
    -> weight-normalised Linear(bottleneck, C, no bias)
Parameters of all heads are stacked along a leading head axis (H, in, out) so one forward is a
handful of `baddbmm`/`bmm` calls whatever H is; 32 heads cost about one large matmul.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clusterbench.data import normalize
from clusterbench.methods.linear import StackedLinear

INPUT_NORMS = normalize.NORMALIZATIONS


def column_norm(v: Tensor) -> Tensor:
    """||v|| over the middle axis: (h, in, out) -> (h, out).

    As a sum of squares: `v.norm(dim=1)` reduces along a strided axis ~3x slower on a CPU.
    """
    return (v * v).sum(dim=1).sqrt_()


class FusedWeightNormLinear(nn.Module):
    """H bias-free weight-normalised Linear layers (DINO's last layer, gain trainable).

    weight_v (H, in, out) holds directions, weight_g (H, out) the per-cluster gains; the weight
    used is weight_g * weight_v / ||weight_v|| with the norm taken over `in`, per head and cluster.
    """

    def __init__(self, num_heads: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(num_heads, in_dim, out_dim))
        self.weight_g = nn.Parameter(torch.ones(num_heads, out_dim))
        # The reference (DINOHead) builds the last layer after its truncated-normal init, so
        # weight_v keeps nn.Linear's default, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(in)).
        # Only its direction enters the forward pass, but its norm sets the size of AdamW's
        # steps in direction space (~lr / ||v||).
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight_v, -bound, bound)

    def column_scale(self, heads: slice = slice(None), scale: float = 1.0) -> Tensor:
        """weight_g * scale / ||weight_v|| (h, out): the factor each column of v is scaled by."""
        v = self.weight_v[heads]
        # Under autograd, v.norm's backward matches torch's weight_norm most closely.
        norm = v.norm(dim=1) if torch.is_grad_enabled() and v.requires_grad else column_norm(v)
        return self.weight_g[heads] * scale / norm

    def weight(self, heads: slice = slice(None), scale: float = 1.0) -> Tensor:
        """The effective weight (h, in, out), times `scale` (e.g. 1 / softmax temperature).

        Scaling here costs (h, out) multiplications instead of a pass over the logits.
        """
        return self.weight_v[heads] * self.column_scale(heads, scale)[:, None, :]

    def forward(self, z: Tensor, heads: slice = slice(None)) -> Tensor:
        """z: (h, M, in) -> (h, M, out)."""
        return torch.bmm(z, self.weight(heads))


class FusedHeads(nn.Module):
    """H clustering heads; `forward` returns logits (H, M, C).

    `bottleneck`, `embed` and `last_layer` are exposed separately so that the (H, M, C) logits,
    the memory bottleneck at ~10k clusters, can be produced a block of heads at a time.
    """

    def __init__(
        self,
        in_dim: int,
        num_clusters: int,
        num_heads: int = 32,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        num_hidden_layers: int = 1,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if num_heads < 1 or num_clusters < 1 or num_hidden_layers < 0:
            raise ValueError("need num_heads >= 1, num_clusters >= 1, num_hidden_layers >= 0")
        self.num_heads = num_heads
        self.num_clusters = num_clusters
        dims = [in_dim] + [hidden_dim] * num_hidden_layers + [bottleneck_dim]
        self.mlp = nn.ModuleList(
            StackedLinear(num_heads, a, b, init_std)
            for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.last_layer = FusedWeightNormLinear(num_heads, bottleneck_dim, num_clusters)

    def bottleneck(self, x: Tensor, heads: slice = slice(None)) -> Tensor:
        """x: (M, D) -> bottleneck features before the L2 normalisation (h, M, bottleneck)."""
        h = x
        for i, layer in enumerate(self.mlp):
            h = layer(h, heads)
            if i < len(self.mlp) - 1:
                h = F.gelu(h)
        return h

    def embed(self, x: Tensor, heads: slice = slice(None)) -> Tensor:
        """x: (M, D) -> L2-normalised bottleneck features (h, M, bottleneck)."""
        return F.normalize(self.bottleneck(x, heads), dim=-1)

    def forward(self, x: Tensor, heads: slice = slice(None)) -> Tensor:
        """x: (M, D) -> logits (h, M, C) for the selected heads."""
        return self.last_layer(self.embed(x, heads), heads)

    def head_slices(self, chunk: int | None) -> list[slice]:
        """Contiguous head ranges of at most `chunk` heads (all heads at once when None)."""
        step = self.num_heads if not chunk else max(1, min(chunk, self.num_heads))
        return [slice(i, min(i + step, self.num_heads)) for i in range(0, self.num_heads, step)]


def l2_normalize(h: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """`F.normalize(h, dim=-1)` and the norms ||h|| (..., 1), for `l2_normalize_backward`."""
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return h * norm.clamp_min(eps).reciprocal(), norm


def l2_normalize_backward(grad: Tensor, y: Tensor, norm: Tensor, eps: float = 1e-12) -> Tensor:
    """dL/dh from dL/dy for y = l2_normalize(h, eps); overwrites `grad`.

    dL/dh = (dL/dy - y <y, dL/dy>) / ||h||, the second term absent where the norm was clamped.
    """
    along = (grad * y).sum(dim=-1, keepdim=True)
    along.masked_fill_(norm < eps, 0.0)
    return grad.addcmul_(y, along, value=-1.0).div_(norm.clamp_min(eps))


class InputNorm(nn.Module):
    """Feature normalisation before the heads: 'none', 'l2' or 'standardize' (train mean/std).

    Statistics are buffers, so a checkpoint restores them with the heads.
    """

    def __init__(self, dim: int, mode: str = "none", eps: float = 1e-6) -> None:
        super().__init__()
        if mode not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
        self.mode = mode
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def needs_statistics(self) -> bool:
        return self.mode == "standardize" and not bool(self.fitted)

    @torch.no_grad()
    def fit(self, chunks: Iterable[Tensor]) -> InputNorm:
        """Mean and std of the train features from row blocks (N_i, D), in float64."""
        mean, std = normalize.moments(rows.to(device="cpu") for rows in chunks)
        self.set_statistics(mean, std)
        return self

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).clamp_min(self.eps))
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "l2":
            return normalize.l2_normalize(x)
        if self.mode == "standardize":
            return normalize.standardize(x, self.mean, self.std)
        return x.float()


def weight_decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict]:
    """AdamW groups as the reference's `get_params_groups`: no decay on biases and per-unit
    vectors, decay on weight matrices and on the last layer's weight-norm gain `weight_g`.

    Stacked head parameters carry a leading head axis, so a per-head matrix has ndim 3 and a
    per-head vector ndim 2. The reference's gain is the (C, 1) `weight_g` of
    `nn.utils.weight_norm`, two-dimensional, so its ndim rule decays it; so do we.
    """
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        per_head_ndim = param.ndim - 1
        if name.endswith("weight_g"):
            decay.append(param)
        elif name.endswith("bias") or per_head_ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
