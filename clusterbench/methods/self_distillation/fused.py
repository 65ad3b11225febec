"""The fused last layer + loss of the self-distillation heads, a block of heads at a time.

A performance kernel, kept apart from the LightningModule: `LastLayerLoss` runs the L2
normalisation, the weight-normalised last layer and the loss for a block of heads while its
(2B, C) tensors are in cache, takes the loss's gradient w.r.t. the logits in closed form and
turns it at once into the gradients w.r.t. the bottleneck features and the layer's weights. No
(H, 2B, C) tensor is kept for the backward pass and nothing is recomputed. Measured in the
docs/performance.md ("Speed and memory"); `reference.py` is the straightforward per-head loop it equals.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clusterbench.core.device import BLOCK_ELEMENTS
from clusterbench.methods.self_distillation.heads import (
    column_norm,
    l2_normalize,
    l2_normalize_backward,
)

CPU_BLOCK_ELEMENTS, ACCELERATOR_BLOCK_ELEMENTS = BLOCK_ELEMENTS["heads"]  # core/device.py


def split_blocks(chunks: list[slice], heads_per_block: int) -> list[slice]:
    """Split each chunk of heads into consecutive blocks of at most `heads_per_block`."""
    out = []
    for chunk in chunks:
        for start in range(chunk.start, chunk.stop, heads_per_block):
            out.append(slice(start, min(start + heads_per_block, chunk.stop)))
    return out


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for `device`, or None (torch >= 2.4 API, older fallback)."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return None
    except (TypeError, AttributeError):
        if device.type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device.type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


def bmm_in(a: Tensor, b: Tensor, dtype: torch.dtype, out: Tensor | None = None) -> Tensor:
    """Batched a @ b taken in `dtype`, as float32; written into `out` (float32) when given."""
    with torch.autocast(a.device.type, enabled=False):
        if dtype == a.dtype == b.dtype == torch.float32 and out is not None and out.is_contiguous():
            return torch.bmm(a, b, out=out)
        product = torch.bmm(a.to(dtype), b.to(dtype)).float()
        return product if out is None else out.copy_(product)


class LastLayerLoss(torch.autograd.Function):
    """Per-head losses (H,) from the bottleneck features h (H, M, K), before normalisation, and
    the weight-normed last layer (weight_v (H, K, C), weight_g (H, C), times `scale`).

    Runs normalisation, last layer and loss one block of heads at a time, while the block's
    tensors are in cache. The block's loss returns the gradient w.r.t. its logits in closed
    form, which the forward pass turns at once into the gradients w.r.t. h, weight_v and
    weight_g: these are all that is kept for the backward pass. Memory is one block's logits
    whatever H and C are, and nothing is recomputed. `dtype` is that of the matrix products
    (bfloat16 under bf16 autocast), everything else is float32.
    """

    @staticmethod
    def forward(ctx, h, weight_v, weight_g, scale, blocks, block_loss, dtype) -> Tensor:
        need_h, need_v, need_g = ctx.needs_input_grad[:3]
        need_w = need_v or need_g
        largest = max(heads.stop - heads.start for heads in blocks)
        with torch.autocast(h.device.type, enabled=False):
            losses = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(h) if need_h else None
            grad_v = torch.empty_like(weight_v) if need_v else None
            grad_g = torch.empty_like(weight_g) if need_g else None
            # One logits buffer for all blocks: it stays in cache, and no pages are touched anew.
            buffer = h.new_empty((largest, h.shape[1], weight_v.shape[-1]), dtype=torch.float32)
            for heads in blocks:
                k = heads.stop - heads.start
                z, norm = l2_normalize(h[heads].float())  # (k, M, K)
                v = weight_v[heads].float()  # (k, K, C)
                v_norm = column_norm(v)  # (k, C)
                column = weight_g[heads].float() * scale / v_norm
                weight = (v * column[:, None, :]).to(dtype)
                logits = bmm_in(z, weight, dtype, out=buffer[:k])
                loss, grad = block_loss(heads, logits.view(k, 2, -1, logits.shape[-1]))
                losses[heads] = loss
                if need_h or need_w:
                    block_backward(
                        grad.view_as(logits),
                        z,
                        norm,
                        v,
                        v_norm,
                        column,
                        weight,
                        scale,
                        dtype,
                        grad_h[heads] if need_h else None,
                        grad_v[heads] if need_v else None,
                        grad_g[heads] if need_g else None,
                    )
                del logits, grad  # free this block's gradient before the next block's tensors
        ctx.save_for_backward(grad_h, grad_v, grad_g)
        return losses

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses: Tensor):
        # The saved gradients are scaled in place: no second copy of them exists at any time.
        # That makes a second backward through the same graph (retain_graph=True) wrong, so it
        # is refused.
        if getattr(ctx, "done", False):
            raise RuntimeError("the fused head loss supports one backward pass per forward")
        ctx.done = True

        def times(grad: Tensor | None) -> Tensor | None:
            if grad is None:
                return None
            return grad.mul_(grad_losses.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype))

        grad_h, grad_v, grad_g = ctx.saved_tensors
        return times(grad_h), times(grad_v), times(grad_g), None, None, None, None


def block_backward(
    grad: Tensor,
    z: Tensor,
    norm: Tensor,
    v: Tensor,
    v_norm: Tensor,
    column: Tensor,
    weight: Tensor,
    scale: float,
    dtype: torch.dtype,
    grad_h: Tensor | None,
    grad_v: Tensor | None,
    grad_g: Tensor | None,
) -> None:
    """Gradients of one block w.r.t. h, weight_v, weight_g from dL/dlogits, into the outputs.

    z = h / ||h|| (norms `norm`), weight = v * column with column = g * scale / ||v||
    (`v_norm`, the norm over K per cluster).
    """
    if grad_h is not None:
        out = grad_h if grad_h.dtype == torch.float32 else None  # else reduce in float32
        grad_z = bmm_in(grad, weight.transpose(1, 2), dtype, out=out)
        grad_h.copy_(l2_normalize_backward(grad_z, z, norm))
    if grad_v is None and grad_g is None:
        return
    grad_w = bmm_in(z.transpose(1, 2), grad, dtype, out=grad_v)
    along = (grad_w * v).sum(dim=1)  # (k, C): <dL/dweight, v> per cluster
    if grad_g is not None:
        grad_g.copy_(along * scale / v_norm)
    if grad_v is not None:
        radial = (column * along / v_norm.square())[:, None, :]
        grad_v.copy_(grad_w.mul_(column[:, None, :]).addcmul_(v, radial, value=-1.0))
