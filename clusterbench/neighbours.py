"""Nearest-neighbour mining with faiss, cached on disk per view, split, k and index.

`NeighbourIndex` (built by the run from the `knn` config group) is what a method asks for
neighbours: it mines the train split's table on first use, keeps it, and records whether the
disk cache answered and how long it took.

Cosine similarity: rows are L2-normalised and searched by inner product. `index` is a faiss
index_factory string: "Flat" (exact, the default) or e.g. "IVF4096,Flat" for large N;
"IVFauto" takes its number of cells from N (`ivf_nlist`, the rule `knn=ivf` uses).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from clusterbench.core.atomic import save_npy_atomic, write_json_atomic
from clusterbench.core.device import faiss_uses_gpu
from clusterbench.core.errors import ConfigError
from clusterbench.core.fingerprint import array_checksum
from clusterbench.core.progress import progress
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import FeatureRows

CACHE_VERSION = 1
# Rows the coarse quantiser of an IVF index is trained on (a random sample), and the fewest
# training points per cell faiss accepts without a warning.
IVF_TRAIN_ROWS = 256 * 1024
IVF_MIN_POINTS_PER_CELL = 39
# nlist = the power of two nearest IVF_CELLS_PER_SQRT_N * sqrt(N): measured at 1M x 384 by
# `python -m clusterbench perf scale` (docs/performance.md, "A million rows").
IVF_CELLS_PER_SQRT_N = 4.0


def ivf_nlist(n: int) -> int:
    """IVF cells for `n` rows: the power of two nearest IVF_CELLS_PER_SQRT_N * sqrt(n), capped so
    that the training sample keeps faiss's minimum of 39 points per cell (4096 for 1M rows)."""
    cap = max(1, min(n, IVF_TRAIN_ROWS) // IVF_MIN_POINTS_PER_CELL)
    target = max(1.0, IVF_CELLS_PER_SQRT_N * math.sqrt(n))
    nlist = 2 ** round(math.log2(target))
    while nlist > cap:
        nlist //= 2
    return nlist


def resolve_index(index: str, n: int) -> str:
    """The index_factory string with "IVFauto" replaced by IVF<ivf_nlist(n)>."""
    return re.sub(r"\bIVFauto\b", f"IVF{ivf_nlist(n)}", index)


def build_index(
    rows: FeatureRows,
    index: str,
    nprobe: int,
    device: str,
    chunk_size: int,
    seed: int,
    timings: dict | None = None,
):
    """A faiss inner-product index over the L2-normalised rows, filled in chunks.

    `timings`, when given, receives the wall and CPU seconds of training and of adding
    (`train_seconds`, `add_seconds`, `*_cpu_seconds`): the scale benchmark reports them apart,
    since training the coarse quantiser and filling the lists grow differently with N.
    """
    faiss_index = faiss.index_factory(
        rows.dim, resolve_index(index, len(rows)), faiss.METRIC_INNER_PRODUCT
    )
    if faiss_uses_gpu(device):
        faiss_index = faiss.index_cpu_to_all_gpus(faiss_index)
    start, cpu = time.perf_counter(), time.process_time()
    if not faiss_index.is_trained:
        # IVF-style indexes learn their coarse quantiser from a random sample of the rows.
        sample = np.random.default_rng(seed).choice(
            len(rows), min(len(rows), IVF_TRAIN_ROWS), replace=False
        )
        faiss_index.train(l2_normalize_rows(rows.take(np.sort(sample))))
    trained, trained_cpu = time.perf_counter(), time.process_time()
    for _, chunk in progress(
        rows.chunks(chunk_size), f"indexing {len(rows):,} rows", rows.num_chunks(chunk_size)
    ):
        faiss_index.add(l2_normalize_rows(chunk))
    if timings is not None:
        timings.update(
            train_seconds=trained - start,
            add_seconds=time.perf_counter() - trained,
            train_cpu_seconds=trained_cpu - cpu,  # all threads: the time on an idle machine
            add_cpu_seconds=time.process_time() - trained_cpu,  # is about this / threads
        )
    if hasattr(faiss_index, "nprobe"):
        faiss_index.nprobe = nprobe
    else:
        try:
            faiss.ParameterSpace().set_index_parameter(faiss_index, "nprobe", nprobe)
        except RuntimeError:
            pass  # exact indexes have no nprobe
    return faiss_index


def search_neighbours(
    rows: FeatureRows,
    k: int,
    index: str = "Flat",
    nprobe: int = 32,
    device: str = "auto",
    chunk_size: int = 65536,
    seed: int = 0,
) -> np.ndarray:
    """(N, k) int64 indices of each row's k nearest other rows (self excluded), best first."""
    n = len(rows)
    if not 1 <= k < n:
        raise ConfigError(f"knn.k={k} must be in [1, N-1] for a split of N={n} samples")
    faiss_index = build_index(rows, index, nprobe, device, chunk_size, seed)
    out = np.empty((n, k), dtype=np.int64)
    for start, chunk in progress(
        rows.chunks(chunk_size), f"mining {k}-NN of {n:,} rows", rows.num_chunks(chunk_size)
    ):
        _, found = faiss_index.search(l2_normalize_rows(chunk), k + 1)
        out[start : start + chunk.shape[0]] = drop_self(
            found, np.arange(start, start + chunk.shape[0])
        )
    return out


def drop_self(found: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Remove each query's own id from its k+1 results, or the last result if self is absent
    (exact duplicates can push self out of the list)."""
    is_self = found == ids[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    return found[~is_self].reshape(found.shape[0], found.shape[1] - 1)


class NeighbourCache:
    """kNN arrays on disk: `<dir>/<key>.npy` plus `<key>.json` holding shape and checksum.

    The key covers the view fingerprint, split, k and index, so a regenerated store, another
    benchmark or another k never reuses a stale file; a truncated or edited file fails the
    checksum and is rebuilt.
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.dir = Path(cache_dir).expanduser() / "knn"

    def key(self, fingerprint: str, split: str, k: int, index: str) -> str:
        tag = "".join(ch if ch.isalnum() else "-" for ch in index)
        return f"{fingerprint}_{split}_k{k}_{tag}_v{CACHE_VERSION}"

    def load(self, key: str, n: int, k: int) -> np.ndarray | None:
        data, meta = self.dir / f"{key}.npy", self.dir / f"{key}.json"
        if not (data.exists() and meta.exists()):
            return None
        try:
            info = json.loads(meta.read_text())
            array = np.load(data, allow_pickle=False)
        except (OSError, ValueError, EOFError, json.JSONDecodeError):
            return None
        if (
            array.shape != (n, k)
            or array.dtype != np.int64
            or info.get("sha1") != array_checksum(array)
            or (array.size and (array.min() < 0 or array.max() >= n))
        ):
            return None
        return array

    def save(self, key: str, array: np.ndarray) -> None:
        save_npy_atomic(self.dir / f"{key}.npy", array)
        info = {"shape": list(array.shape), "sha1": array_checksum(array)}
        write_json_atomic(self.dir / f"{key}.json", info)


def mine_neighbours(
    rows: FeatureRows,
    fingerprint: str,
    split: str,
    k: int,
    cache_dir: str | os.PathLike | None,
    index: str = "Flat",
    nprobe: int = 32,
    device: str = "auto",
    chunk_size: int = 65536,
    seed: int = 0,
) -> tuple[np.ndarray, bool]:
    """Cached `search_neighbours`; returns (neighbours, whether the cache was used)."""
    if cache_dir is None:
        return search_neighbours(rows, k, index, nprobe, device, chunk_size, seed), False
    index = resolve_index(index, len(rows))  # the key names the cells really used
    cache = NeighbourCache(cache_dir)
    key = cache.key(fingerprint, split, k, index)
    cached = cache.load(key, len(rows), k)
    if cached is not None:
        return cached, True
    found = search_neighbours(rows, k, index, nprobe, device, chunk_size, seed)
    cache.save(key, found)
    return found, False


@dataclass
class NeighbourIndex:
    """The train split's kNN table of one view (`conf/knn/*.yaml`, a Hydra partial).

    `table(k)` mines once with max(k, `self.k`) columns, so methods asking for fewer share one
    cached table; `from_cache` and `seconds` say how it was obtained.
    """

    rows: FeatureRows
    fingerprint: str
    cache_dir: str | os.PathLike | None
    k: int = 50
    index: str = "Flat"
    nprobe: int = 1
    chunk_size: int = 65536
    device: str = "auto"
    seed: int = 0
    nlist: int | str | None = None  # IVF cells ("auto": from N); read through `index` only
    from_cache: bool | None = None
    seconds: float | None = None
    _table: np.ndarray | None = field(default=None, repr=False)

    def table(self, k: int) -> np.ndarray:
        """(N_train, k) int64 nearest neighbours, best first, self excluded."""
        if self._table is None or self._table.shape[1] < k:
            start = time.perf_counter()
            self._table, self.from_cache = mine_neighbours(
                self.rows,
                self.fingerprint,
                "train",
                max(int(k), int(self.k)),
                self.cache_dir,
                index=self.index,
                nprobe=int(self.nprobe),
                device=self.device,
                chunk_size=int(self.chunk_size),
                seed=int(self.seed),
            )
            self.seconds = time.perf_counter() - start
        return self._table[:, :k]
