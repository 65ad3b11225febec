"""Problem shapes, the FLOP count of a training step and the exact memory model of the
fused step: what `python -m clusterbench perf` measures against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clusterbench.methods.self_distillation.fused import (
    ACCELERATOR_BLOCK_ELEMENTS,
    CPU_BLOCK_ELEMENTS,
)

IMPLEMENTATIONS = ("fused", "loop")
GIB = 1 << 30


@dataclass(frozen=True)
class Shape:
    """Problem size (and precision) of one benchmark configuration."""

    n: int = 50_000  # rows of the feature matrix
    d: int = 768  # feature dimension
    c: int = 1000  # clusters per head
    h: int = 32  # heads
    b: int = 512  # pairs per step
    hidden: int = 512
    bottleneck: int = 256
    knn: int = 50
    head_chunk: int | None = None
    bf16: bool = False  # forward under bfloat16 autocast, as Lightning's bf16-mixed

    @property
    def layers(self) -> list[tuple[int, int]]:
        """(in, out) of every matrix product of one head, the last layer included."""
        return [(self.d, self.hidden), (self.hidden, self.bottleneck), (self.bottleneck, self.c)]


FULL = Shape()
QUICK = Shape(n=2_000, d=64, c=40, h=4, b=64, hidden=64, bottleneck=32, knn=10)


# --------------------------------------------------------------------------- FLOPs
def step_flops(shape: Shape) -> dict[str, float]:
    """Matrix-product FLOPs of one step (2 per multiply-add), layer by layer.

    Forward of student and teacher on the 2B rows, and the student's backward: the weight
    gradient of every layer and the input gradient of every layer but the first (the features
    need none). Element-wise work (GELU, normalisation, softmax, loss, AdamW) is not counted.
    """
    rows = 2 * shape.b
    per_layer = [2.0 * rows * i * o * shape.h for i, o in shape.layers]
    forward = sum(per_layer)
    backward = sum(per_layer) + sum(per_layer[1:])
    return {
        "student_forward": forward,
        "teacher_forward": forward,
        "student_backward": backward,
        "total": 2 * forward + backward,
        # The common shortcut backward = 2 x forward also counts the first layer's input
        # gradient, which is never computed; reported for comparison only.
        "total_if_backward_were_2x_forward": 4 * forward,
    }


# --------------------------------------------------------------------------- memory
def memory_model(shape: Shape, loss: str, block_heads: int, bf16: bool = False) -> dict:
    """Bytes of the fused step, by part, counted from the tensors alive at its peaks.

    Elements, with R = 2B rows, D input, F hidden, K bottleneck, C clusters, H heads, k heads
    per block of last layer and loss (`block_heads`: at most head_chunk, and the device's block
    limit), P = H (D F + F + F K + K + K C + C) the parameters of one network:

    persistent  4 P                 student, teacher, AdamW's two moments (float32)
    data        N D                 features (float32) on the device
    forward     2 R D               gathered rows and the normalised input
                + 2 H R K           teacher and student bottleneck features
                + 2 H R F           pre- and post-GELU hidden layer, saved for backward
                + H R K + H K C     closed-form gradients w.r.t. h and the last layer's v
                + k R K + k K C     the block's normalised features and weight
                + 4 k R C           the block: logits, teacher logits, two softmaxes;
                                    TEMI without head_chunk: H R C teacher logits kept for
                                    all heads (its pair weight needs them) + 3 k R C
    backward    2 R D + 3 H R F + H R K + H K C + H F K
                                    at the second layer's backward: both hidden tensors and
                                    the gradient w.r.t. them, the gradients w.r.t. h, v, W2
    optimiser   P gradients
    step        max(forward, backward, optimiser); total = persistent + data + step

    All float32 (4 bytes). Under bf16 autocast (`bf16`) the activations H R F, H R K and a copy
    of the input R D take 2 bytes, the student's bf16 weight copies H (D F + F K) are cached
    for backward, and each block adds a 2-byte copy of its product; the logit blocks and
    everything the size of a parameter stay float32.
    """
    h, r, c = shape.h, 2 * shape.b, shape.c
    d, f, k = shape.d, shape.hidden, shape.bottleneck
    params = h * (d * f + f + f * k + k + k * c + c)
    kb = min(block_heads, h)
    block = kb * r * c
    chunked = shape.head_chunk is not None and shape.head_chunk < h
    blocks = h * r * c + 3 * block if loss == "temi" and not chunked else 4 * block
    act = 2 if bf16 else 4  # bytes per activation element
    rows = 2 * r * d * 4 + (r * d * 2 + h * (d * f + f * k) * 2 if bf16 else 0)
    forward = (
        rows
        + (2 * h * r * k + 2 * h * r * f + h * r * k + kb * r * k) * act
        + (h * k * c + kb * k * c) * 4
        + blocks * 4
        + (block * 2 if bf16 else 0)
    )
    backward = rows + (3 * h * r * f + h * r * k) * act + (h * k * c + h * f * k) * 4
    parts = {
        "persistent": 4 * params * 4,
        "data": shape.n * shape.d * 4,
        "forward": forward,
        "backward": backward,
        "optimizer": params * 4,
    }
    parts["step"] = max(parts["forward"], parts["backward"], parts["optimizer"])
    parts["total"] = parts["persistent"] + parts["data"] + parts["step"]
    return parts


def block_heads_for(shape: Shape, device: torch.device, block_elements: int | None = None) -> int:
    """Heads per last-layer block the fused step uses for `shape` on `device`."""
    if block_elements is None:
        cpu = device.type == "cpu"
        block_elements = CPU_BLOCK_ELEMENTS if cpu else ACCELERATOR_BLOCK_ELEMENTS
    per_block = max(block_elements // (2 * shape.b * shape.c), 1)
    return min(per_block, shape.head_chunk or shape.h, shape.h)
