"""Every row votes for its nearest name; votes are counted per cluster without a dense table.

- `nearest_names`: cosine top-1 of each image row over the vocabulary's text embeddings, rows
  in chunks and names in chunks (a running maximum), on the configured device, so memory is
  one block of rows x names whatever the size of either.
- `PairCounter`: counts of (cluster, name) pairs, kept sparse. Each chunk's pairs are encoded
  as one int64 key, counted with `np.unique` and merged into the running sorted table (a
  bincount over the merged keys), so the table holds only the pairs that occur (at most one
  per row, far fewer in practice) instead of a clusters x names matrix (10450 x 11926 int32
  would be ~500 MB).
- `top_candidates`: each cluster's `m` best names by votes (ties: the lower name index), as
  CSR arrays; the same counter gives each cluster's majority class for scoring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from clusterbench.core.device import block_elements, torch_device
from clusterbench.data.normalize import l2_normalize
from clusterbench.data.rows import Rows

# Pairs buffered before they are merged into the running table.
MERGE_PAIRS = 1 << 22


def nearest_names(
    rows: Rows,
    text: np.ndarray,
    device: str = "auto",
    chunk_rows: int | None = None,
    chunk_names: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, (n,) int64 index of the most similar text row) for consecutive row chunks."""
    dev = torch_device(device)
    budget = block_elements("similarity", dev.type == "cuda")
    v = int(text.shape[0])
    name_step = int(chunk_names or min(v, max(1, budget // 64)))
    row_step = int(chunk_rows or max(1, min(1 << 20, budget // min(v, name_step))))
    emb = l2_normalize(torch.as_tensor(np.asarray(text, dtype=np.float32)).to(dev))
    with torch.inference_mode():
        for start in range(0, len(rows), row_step):
            stop = min(start + row_step, len(rows))
            x = l2_normalize(torch.as_tensor(rows.chunk(start, stop)).to(dev).float())
            best = torch.full((stop - start,), float("-inf"), device=dev)
            arg = torch.zeros(stop - start, dtype=torch.int64, device=dev)
            for lo in range(0, v, name_step):
                hi = min(lo + name_step, v)
                value, index = (x @ emb[lo:hi].T).max(dim=1)
                better = value > best  # strict: ties keep the lower name index
                best = torch.where(better, value, best)
                arg = torch.where(better, index + lo, arg)
            yield start, arg.cpu().numpy()


@dataclass
class Counts:
    """Sparse (cluster, item) counts, sorted by cluster then item."""

    cluster: np.ndarray  # int64
    item: np.ndarray  # int64
    count: np.ndarray  # int64

    def sizes(self, num_clusters: int) -> np.ndarray:
        return np.bincount(self.cluster, weights=self.count, minlength=num_clusters).astype(
            np.int64
        )


class PairCounter:
    """Counts of (cluster, item) pairs fed chunk by chunk; `counts()` gives the sparse table."""

    def __init__(self, num_items: int) -> None:
        self.num_items = int(num_items)
        self._keys = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, cluster: np.ndarray, item: np.ndarray) -> None:
        keys = np.asarray(cluster, dtype=np.int64) * self.num_items + np.asarray(
            item, dtype=np.int64
        )
        unique, counts = np.unique(keys, return_counts=True)
        self._pending.append((unique, counts))
        self._pending_size += unique.size
        if self._pending_size >= MERGE_PAIRS:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._keys, inverse = np.unique(keys, return_inverse=True)
        self._counts = np.bincount(inverse, weights=counts, minlength=self._keys.size).astype(
            np.int64
        )
        self._pending, self._pending_size = [], 0

    def counts(self) -> Counts:
        self._merge()
        return Counts(
            self._keys // self.num_items, self._keys % self.num_items, self._counts.copy()
        )


def top_candidates(
    counts: Counts, num_clusters: int, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr (K+1,), items, counts): each cluster's at most `m` most counted items, best
    first (ties: the lower item index)."""
    order = np.lexsort((counts.item, -counts.count, counts.cluster))
    cluster = counts.cluster[order]
    starts = np.zeros(num_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(cluster, minlength=num_clusters), out=starts[1:])
    rank = np.arange(order.size) - starts[cluster]
    keep = order[rank < m]
    kept_cluster = counts.cluster[keep]
    indptr = np.zeros(num_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(kept_cluster, minlength=num_clusters), out=indptr[1:])
    return indptr, counts.item[keep], counts.count[keep]


def majority(counts: Counts, num_clusters: int) -> np.ndarray:
    """(K,) each cluster's most counted item (ties: the lower index), -1 for an empty cluster."""
    indptr, items, _ = top_candidates(counts, num_clusters, 1)
    out = np.full(num_clusters, -1, dtype=np.int64)
    has = np.diff(indptr) > 0
    out[has] = items[indptr[:-1][has]]
    return out
