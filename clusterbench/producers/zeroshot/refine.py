"""Hierarchical zero-shot label refining (section 4.2, appendix C.2): leaf-HZR and p-HZR.

A sample whose class has child classes in the tree (`Tree.class_parent`) is moved to the
child its image is most similar to, again and again, until a leaf class (leaf-HZR) or until
the current class itself beats every child (p-HZR; the current class wins ties, so a sample
only moves when a child is strictly closer). Ties between children go to the lowest class id.

Children of a depth-d class all sit at depth d+1, so one pass over the depths suffices: at
depth d every still-moving sample is scored against all classes of depth d+1 in one batched
product and the classes that are not children of its current class are masked out. The work
is a handful of matrix products per depth and row chunk, never a loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clusterbench.benchmarks.imagenet21k.tree import Tree
from clusterbench.core.device import block_elements, torch_device
from clusterbench.core.progress import progress
from clusterbench.data.normalize import l2_normalize
from clusterbench.data.rows import Rows, chunks

MODES = ("leaf", "parent")
KIND_OF_MODE = {"leaf": "leaf_hzr", "parent": "p_hzr"}


@dataclass(frozen=True)
class Levels:
    """Per-depth candidate lists of a tree, as tensors on the compute device."""

    depth: Tensor  # (C,) class depth
    parent: Tensor  # (C,) class parent, -1 at a root
    has_children: Tensor  # (C,) bool
    by_depth: tuple[Tensor, ...]  # by_depth[d]: class ids at depth d, ascending

    @classmethod
    def of(cls, tree: Tree, device: torch.device) -> Levels:
        parent = np.array(tree.class_parent)
        has_children = np.zeros(tree.num_classes, dtype=bool)
        has_children[parent[parent >= 0]] = True
        depth = np.array(tree.depth)
        by_depth = tuple(
            torch.as_tensor(np.flatnonzero(depth == d), device=device)
            for d in range(int(depth.max()) + 1)
        )
        return cls(
            depth=torch.as_tensor(depth, device=device),
            parent=torch.as_tensor(parent, device=device),
            has_children=torch.as_tensor(has_children, device=device),
            by_depth=by_depth,
        )


def descend(
    x: Tensor, labels: Tensor, class_emb: Tensor, levels: Levels, mode: str, budget: int
) -> tuple[Tensor, Tensor]:
    """New labels and the number of steps each sample moved, for unit rows `x` on one device.

    `budget` bounds the elements of one similarity block (rows x classes of a depth)."""
    cur = labels.clone()
    steps = torch.zeros_like(labels)
    active = levels.has_children[cur]
    for d in range(len(levels.by_depth) - 1):
        idx = torch.nonzero(active & (levels.depth[cur] == d)).flatten()
        if idx.numel() == 0:
            continue
        cands = levels.by_depth[d + 1]
        cand_emb, cand_parent = class_emb[cands], levels.parent[cands]
        rows_per_block = max(1, budget // max(cands.numel(), 1))
        for start in range(0, idx.numel(), rows_per_block):
            part = idx[start : start + rows_per_block]
            xs, here = x[part], cur[part]
            sims = xs @ cand_emb.T
            sims.masked_fill_(cand_parent[None, :] != here[:, None], float("-inf"))
            best = sims.argmax(dim=1)  # first maximum: ties go to the lowest class id
            move = torch.ones_like(part, dtype=torch.bool)
            if mode == "parent":
                own = (xs * class_emb[here]).sum(dim=1)
                move = sims.gather(1, best[:, None]).squeeze(1) > own
            new = cands[best]
            cur[part[move]] = new[move]
            steps[part[move]] += 1
            active[part] = move & levels.has_children[new]
    return cur, steps


def refine(
    features: Rows,
    labels: np.ndarray,
    class_emb: np.ndarray,
    tree: Tree,
    mode: str,
    device: str = "auto",
    chunk_rows: int | None = None,
    budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(new labels, steps moved) of every row: leaf-HZR (`mode=leaf`) or p-HZR (`parent`).

    `labels` are tree class ids; `class_emb` is (C, D) in tree order. Rows are streamed in
    chunks onto the device, so a store larger than device memory is fine."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    dev = torch_device(device)
    gpu = dev.type == "cuda"
    chunk_rows = chunk_rows or (1 << 20 if gpu else 1 << 16)
    budget = budget or block_elements("similarity", gpu)
    levels = Levels.of(tree, dev)
    emb = l2_normalize(torch.as_tensor(class_emb).to(dev))
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty_like(labels)
    moved = np.empty_like(labels)
    blocks = chunks(features, chunk_rows)
    total = -(-len(features) // chunk_rows)
    with torch.inference_mode():
        for start, block in progress(blocks, f"HZR ({mode})", total=total):
            stop = start + block.shape[0]
            x = l2_normalize(torch.as_tensor(block).to(dev, non_blocking=True))
            lab = torch.as_tensor(labels[start:stop]).to(dev)
            new, steps = descend(x, lab, emb, levels, mode, budget)
            out[start:stop] = new.cpu().numpy()
            moved[start:stop] = steps.cpu().numpy()
    return out, moved
