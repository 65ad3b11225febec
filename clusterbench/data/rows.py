"""Reading rows of a feature matrix: the one interface every stage uses.

`FeatureRows` reads a (memory-mapped) (N, D) array, optionally through an index array (a
benchmark view's subset), always as float32 copies, in sorted order so memory-mapped I/O stays
sequential. `TensorRows` gives a torch tensor (e.g. features resident on an accelerator) the
same interface without copies. `as_rows` wraps whatever a caller has: a tensor, an array or
memmap, or an object that already speaks the interface. Consumers (kNN mining, k-means, the
pair DataModule, prediction, input statistics) use only `len`, `dim`, `take`, `chunk`,
and the functions `chunks` and `to_device` built on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from clusterbench.core.errors import ConfigError, StoreError
from clusterbench.data.normalize import l2_normalize_rows


@runtime_checkable
class Rows(Protocol):
    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def take(self, rows: np.ndarray) -> np.ndarray | Tensor: ...

    def chunk(self, start: int, stop: int) -> np.ndarray | Tensor: ...


def chunks(rows: Rows, size: int) -> Iterator[tuple[int, np.ndarray | Tensor]]:
    """(start, block) for consecutive blocks of at most `size` rows, in order."""
    for start in range(0, len(rows), size):
        yield start, rows.chunk(start, min(start + size, len(rows)))


def to_device(
    rows: Rows,
    device: torch.device,
    dtype: torch.dtype | None = None,
    chunk_rows: int = 65536,
    check_finite: str | None = None,
) -> Tensor:
    """All rows as one (N, D) tensor on `device` (in `dtype`, default the rows' own), filled
    block by block: no full host copy. With `check_finite` (what the rows are, for the
    message) a row holding NaN or inf is a StoreError naming the first one."""
    n = len(rows)
    if n == 0:
        raise ConfigError(f"{check_finite or 'rows'} has no samples")
    if isinstance(rows, TensorRows) and check_finite is None:
        return rows.tensor.to(device=device, dtype=dtype or rows.tensor.dtype)
    out = None
    bad, first = 0, -1
    for start, block in chunks(rows, chunk_rows):
        block = torch.as_tensor(block).to(device)
        if out is None:
            out = torch.empty((n, rows.dim), dtype=dtype or block.dtype, device=device)
        if check_finite is not None:
            finite = torch.isfinite(block).all(dim=1)
            if not bool(finite.all()):
                first = first if first >= 0 else start + int(torch.nonzero(~finite)[0, 0])
                bad += int((~finite).sum())
        out[start : start + block.shape[0]] = block.to(out.dtype)
    if bad:
        raise StoreError(
            f"{check_finite}: {bad:,} of {n:,} feature rows contain NaN or inf (first: view row "
            f"{first}); re-extract them or drop those samples from the store"
        )
    return out


class _RowsMixin:
    """What follows from `__len__` and `chunk`."""

    def num_chunks(self, size: int) -> int:
        return -(-len(self) // size)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray | Tensor]]:
        return chunks(self, size)


class FeatureRows(_RowsMixin):
    """Rows of a memory-mapped (N, D) matrix, optionally restricted to an index array."""

    def __init__(self, features: np.ndarray, index: np.ndarray | None = None) -> None:
        self._features = features
        self._index = None if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._features.shape[0] if self._index is None else self._index.shape[0])

    @property
    def dim(self) -> int:
        return int(self._features.shape[1])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 copy of the given view rows (sorted reads keep memory-mapped I/O sequential)."""
        rows = np.asarray(rows, dtype=np.int64)
        source = rows if self._index is None else self._index[rows]
        order = np.argsort(source, kind="stable")
        out = np.empty((rows.shape[0], self.dim), dtype=np.float32)
        out[order] = self._features[source[order]]
        return out

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """float32 copy of view rows [start, stop)."""
        if self._index is None:
            return np.array(self._features[start:stop], dtype=np.float32)  # writable copy
        return self.take(np.arange(start, stop))

    def to_numpy(self) -> np.ndarray:
        """The whole view as float32 in RAM; only for data known to fit."""
        return self.chunk(0, len(self))


class TensorRows(_RowsMixin):
    """A tensor (N, D) behind the same interface; `take` and `chunk` stay on its device."""

    def __init__(self, features: Tensor) -> None:
        self.tensor = features

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tensor.shape[1])

    def take(self, rows: np.ndarray | Tensor) -> Tensor:
        return self.tensor[torch.as_tensor(rows).to(self.tensor.device)]

    def chunk(self, start: int, stop: int) -> Tensor:
        return self.tensor[start:stop]

    def to_numpy(self) -> np.ndarray:
        return self.tensor.detach().cpu().float().numpy()


class ConcatenatedRows(_RowsMixin):
    """Row-aligned spaces side by side: each space's rows L2-normalised and scaled by its
    weight, then concatenated (a dataset with several representation spaces, read by the
    methods that take one matrix: k-means, TEMI, SCANv2 and kNN mining)."""

    def __init__(self, spaces: list[FeatureRows], weights: list[float]) -> None:
        if len(spaces) != len(weights):
            raise ValueError(f"{len(spaces)} spaces but {len(weights)} weights")
        self.spaces, self.weights = spaces, [float(w) for w in weights]

    def __len__(self) -> int:
        return len(self.spaces[0])

    @property
    def dim(self) -> int:
        return sum(s.dim for s in self.spaces)

    def _join(self, blocks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(
            [
                l2_normalize_rows(b) * np.float32(w)
                for b, w in zip(blocks, self.weights, strict=True)
            ],
            axis=1,
        )

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._join([s.take(rows) for s in self.spaces])

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self._join([s.chunk(start, stop) for s in self.spaces])

    def to_numpy(self) -> np.ndarray:
        return self.chunk(0, len(self))


def as_rows(features) -> FeatureRows | TensorRows | Rows:
    """The row interface over a tensor, an array / memmap, or an object already offering it."""
    if isinstance(features, Tensor):
        return TensorRows(features)
    if isinstance(features, np.ndarray):
        return FeatureRows(features)
    if isinstance(features, Rows):
        return features
    raise TypeError(
        f"features must be a tensor, an array or a row view, got {type(features).__name__}"
    )


__all__ = [
    "ConcatenatedRows",
    "FeatureRows",
    "Rows",
    "TensorRows",
    "as_rows",
    "chunks",
    "to_device",
]
