"""Features resident on the device: copied from a view's rows chunk by chunk, checked for
NaN/inf on the way, and normalised there in place (chunked, so no float32 copy of the split).

Normalisations (`probe.normalize`): `none` (the raw features), `l2` (unit rows: the cosine
geometry of k-means and kNN mining here), `standardize` (zero mean, unit variance per dimension,
statistics from the train split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clusterbench.core.errors import ConfigError, StoreError
from clusterbench.data.normalize import check_mode, l2_normalize, moments, standardize
from clusterbench.data.rows import Rows, chunks

FEATURE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CHUNK_ROWS = 65536


def feature_dtype(name: str, stored: np.dtype) -> torch.dtype:
    """`auto` keeps the store's precision (float16 stays float16: half the device memory)."""
    if name == "auto":
        return torch.float16 if np.dtype(stored) == np.float16 else torch.float32
    if name not in FEATURE_DTYPES:
        raise ConfigError(f"feature dtype {name!r}: expected auto or one of {list(FEATURE_DTYPES)}")
    return FEATURE_DTYPES[name]


def resident(
    rows: Rows, device: torch.device, dtype: torch.dtype, what: str, chunk_rows: int = CHUNK_ROWS
) -> Tensor:
    """(N, D) tensor on `device`, filled block by block; a row with NaN/inf is an error."""
    n = len(rows)
    if n == 0:
        raise ConfigError(f"{what} has no samples")
    out = torch.empty((n, rows.dim), dtype=dtype, device=device)
    bad, first = 0, -1
    for start, block in chunks(rows, chunk_rows):
        t = torch.as_tensor(block).to(device)
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            if first < 0:
                first = start + int(torch.nonzero(~finite)[0, 0])
            bad += int((~finite).sum())
        out[start : start + t.shape[0]] = t.to(dtype)
    if bad:
        raise StoreError(
            f"{what}: {bad:,} of {n:,} feature rows contain NaN or inf (first: view row {first}); "
            "re-extract them or drop those samples from the store"
        )
    return out


@dataclass
class Normalizer:
    """How rows are normalised: `mode`, plus the train statistics `standardize` needs."""

    mode: str = "none"
    mean: Tensor | None = None
    std: Tensor | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)

    @classmethod
    def fit(cls, mode: str, x: Tensor, chunk_rows: int = CHUNK_ROWS) -> Normalizer:
        """Statistics from the (train) rows `x`, accumulated in float64 chunk by chunk."""
        norm = cls(mode)
        if mode != "standardize":
            return norm
        blocks = (x[start : start + chunk_rows] for start in range(0, x.shape[0], chunk_rows))
        mean, std = moments(blocks)
        norm.mean, norm.std = mean.float(), torch.where(std > 0, std, 1.0).float()
        return norm

    def apply_(self, x: Tensor, chunk_rows: int = CHUNK_ROWS) -> Tensor:
        """Normalise `x` in place, in float32 per chunk, stored back in x's dtype."""
        if self.mode == "none":
            return x
        for start in range(0, x.shape[0], chunk_rows):
            block = x[start : start + chunk_rows].float()
            if self.mode == "l2":
                block = l2_normalize(block, dim=1)
            else:
                block = standardize(block, self.mean, self.std)
            x[start : start + chunk_rows] = block.to(x.dtype)
        return x

    def describe(self) -> dict:
        return {"normalize": self.mode}
