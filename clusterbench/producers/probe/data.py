"""The probe's features on the device: their dtype, and their normalisation in place there
(chunked, so no float32 copy of the split). `data.rows.to_device` copies them over.

Normalisations (`probe.normalize`): `standardize` (the default: zero mean, unit variance per
dimension, statistics from the train split; MAE's affine-free BatchNorm before the probe),
`none` (the raw features: the paper's setting), `l2` (unit rows: the cosine geometry of k-means
and kNN mining here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import check_mode, l2_normalize, moments, standardize

FEATURE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CHUNK_ROWS = 65536


def feature_dtype(name: str, stored: np.dtype) -> torch.dtype:
    """`auto` keeps the store's precision (float16 stays float16: half the device memory)."""
    if name == "auto":
        return torch.float16 if np.dtype(stored) == np.float16 else torch.float32
    if name not in FEATURE_DTYPES:
        raise ConfigError(f"feature dtype {name!r}: expected auto or one of {list(FEATURE_DTYPES)}")
    return FEATURE_DTYPES[name]


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
