"""Zero-shot classification over a candidate set, chunked so N x C never materialises.

Logits are cosine similarity times the model's logit scale, softmax over the candidates:
- `all`: every class of the view;
- `level`: the classes of the GT class's level (`Tree.depth`);
- `siblings`: the classes sharing the GT class's class parent (`Tree.class_parent`; the roots
  share "no parent"), falling back to the level when the GT class has no sibling.
Samples are grouped by candidate set (one group for `all`, one per level or parent), and each
group is scored in row chunks, so the memory is chunk x (candidates of one group).
"""

from __future__ import annotations

import numpy as np
import torch

from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.core.device import block_elements, torch_device
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import l2_normalize
from clusterbench.data.rows import Rows

CANDIDATES = ("all", "level", "siblings")


def candidate_groups(tree: Tree, ids: np.ndarray, mode: str) -> np.ndarray:
    """(V,) group id of each view class; classes of one group share one candidate set,
    which is the group itself (view class indices with the same id)."""
    ids = np.asarray(ids, dtype=np.int64)
    if mode == "all":
        return np.zeros(ids.size, dtype=np.int64)
    depth = np.asarray(tree.depth)[ids]
    if mode == "level":
        return depth
    if mode != "siblings":
        raise ConfigError(f"zeroshot.candidates={mode!r}: expected one of {CANDIDATES}")
    parent = np.asarray(tree.class_parent)[ids]
    _, group, size = np.unique(parent, return_inverse=True, return_counts=True)
    alone = size[group] == 1  # no sibling among the view's classes: use the level instead
    return np.where(alone, group.max(initial=0) + 1 + depth, group)


def classify(
    rows: Rows,
    labels: np.ndarray,
    class_emb: np.ndarray,
    groups: np.ndarray,
    logit_scale: float,
    device: str = "auto",
    chunk_rows: int | None = None,
    budget: int | None = None,
    outer: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted view class, softmax confidence) of each row; `class_emb` is (V, D) in view
    order and `labels` pick each row's candidate group (its GT view class's group).

    `outer` (V,) coarser groups, each a union of whole `groups` (e.g. the levels holding the
    sibling sets): rows of one outer group are scored together against all its classes and
    the other groups are masked out, so thousands of small sibling sets cost one product per
    level instead of one each."""
    dev = torch_device(device)
    gpu = dev.type == "cuda"
    budget = budget or block_elements("similarity", gpu)
    emb = l2_normalize(torch.as_tensor(class_emb).to(dev))
    labels = np.asarray(labels, dtype=np.int64)
    outer = groups if outer is None else np.asarray(outer)
    row_outer = outer[labels]
    pred = np.empty(labels.size, dtype=np.int64)
    conf = np.empty(labels.size, dtype=np.float32)
    order = np.argsort(row_outer, kind="stable")
    bounds = np.flatnonzero(np.diff(row_outer[order])) + 1
    with torch.inference_mode():
        for members in np.split(order, bounds):
            if members.size == 0:
                continue
            cands = np.flatnonzero(outer == row_outer[members[0]])
            cand_t = torch.as_tensor(cands, device=dev)
            cand_group = torch.as_tensor(groups[cands], device=dev)
            step = chunk_rows or max(1, min(1 << 20, budget // cands.size))
            for start in range(0, members.size, step):
                part = members[start : start + step]
                x = l2_normalize(torch.as_tensor(rows.take(part)).to(dev))
                logits = logit_scale * (x @ emb[cand_t].T)
                mine = torch.as_tensor(groups[labels[part]], device=dev)
                logits.masked_fill_(cand_group[None, :] != mine[:, None], float("-inf"))
                prob = torch.softmax(logits, dim=1)
                best, arg = prob.max(dim=1)
                pred[part] = cand_t[arg].cpu().numpy()
                conf[part] = best.cpu().numpy()
    return pred, conf
