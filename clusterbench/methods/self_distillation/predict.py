"""Predictions of a trained `SelfDistillationClustering`: the teacher's best head, row chunk by
row chunk, so N x C is never built (top-1, top-k and confidence per row).

Apart from the module because inference is a plain function of its weights: a run, a test or
a user's notebook calls it on any rows (a memory-mapped store, a tensor) on any device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.data.rows import Rows, as_rows
from clusterbench.methods.self_distillation.module import SelfDistillationClustering


@torch.no_grad()
def predict(
    model: SelfDistillationClustering,
    features: Rows | Tensor,
    batch_size: int = 65536,
    head: int | None = None,
    device: str | torch.device | None = None,
    topk: int = 5,
) -> dict[str, Tensor]:
    """Cluster ids from the teacher's best head (or `head`), chunked over rows.

    features: (N, D) raw features, as accepted by the datamodule. `device` moves the module
    first (Lightning returns it to the CPU after fit). Returns CPU tensors: top1 (N,) int64,
    topk (N, min(topk, C)) int64 best first, and confidence (N,) float32, the maximum
    softmax probability at `teacher_temp`.
    """
    n, k = len(as_rows(features)), min(topk, model.num_clusters)
    top = torch.empty((n, k), dtype=torch.long)
    confidence = torch.empty(n, dtype=torch.float32)
    for start, probs in teacher_probabilities(model, features, batch_size, head, device):
        values, index = probs.topk(k, dim=-1)
        top[start : start + len(probs)] = index.cpu()
        confidence[start : start + len(probs)] = values[:, 0].cpu()
    return {"top1": top[:, 0].clone(), "topk": top, "confidence": confidence}


@torch.no_grad()
def predict_probabilities(
    model: SelfDistillationClustering,
    features: Rows | Tensor,
    batch_size: int = 65536,
    head: int | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Teacher best-head probabilities (N, C) on the CPU; for small N or C only."""
    out = torch.empty((len(as_rows(features)), model.num_clusters), dtype=torch.float32)
    for start, probs in teacher_probabilities(model, features, batch_size, head, device):
        out[start : start + len(probs)] = probs.cpu()
    return out


@torch.no_grad()
def teacher_probabilities(
    model: SelfDistillationClustering,
    features: Rows | Tensor,
    batch_size: int,
    head: int | None,
    device: str | torch.device | None,
) -> Iterator[tuple[int, Tensor]]:
    """(first row, (m, C) softmax at `teacher_temp`) per chunk of rows."""
    if device is not None:
        model.to(device)
    head = int(model.best_head) if head is None else int(head)
    if not 0 <= head < model.num_heads:
        raise ConfigError(f"head {head} is out of range for {model.num_heads} heads")
    heads = slice(head, head + 1)
    features = as_rows(features)
    n = len(features)
    for start in progress(range(0, n, batch_size), f"predicting ({n:,} rows)"):
        rows = torch.as_tensor(features.chunk(start, min(start + batch_size, n)))
        rows = rows.to(model.device)
        logits = model.teacher.module(model.input_norm(rows), heads)[0].float()  # (m, C)
        yield start, F.softmax(logits / model.teacher_temp, dim=-1)


@torch.no_grad()
def every_head_top1(
    model: SelfDistillationClustering, features: Rows | Tensor, batch_size: int = 65536
) -> np.ndarray:
    """(H, N) cluster of each row under every teacher head (for the heads' agreement)."""
    features = as_rows(features)
    n = len(features)
    out = np.empty((model.num_heads, n), dtype=np.int64)
    for start in range(0, n, batch_size):
        rows = torch.as_tensor(features.chunk(start, min(start + batch_size, n))).to(model.device)
        logits = model.teacher.module(model.input_norm(rows))  # (H, m, C)
        out[:, start : start + rows.shape[0]] = logits.argmax(-1).cpu().numpy()
    return out
