"""Feature normalisation, one home: scale-safe L2 rows (numpy and torch) and standardisation.

Every stage that normalises calls these: k-means and kNN mining (numpy, in place), the heads'
`InputNorm`, the linear probes and zero-shot scoring (torch). Scale-safe: a row is divided by
its largest absolute value before its norm is taken, so rows whose squared norm overflows
float32 (|x| > ~1e19) or underflows still come out as unit vectors, not zeros or NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clusterbench.core.errors import ConfigError

NORMALIZATIONS = ("none", "l2", "standardize")


def check_mode(mode: str, key: str = "normalize") -> str:
    """`mode` if it names a normalisation, else a ConfigError naming `key`."""
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"{key}={mode!r}: expected one of {NORMALIZATIONS}")
    return mode


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of a float array in place; zero rows stay zero."""
    peak = np.abs(x).max(axis=1, keepdims=True)
    np.divide(x, np.where(peak > 0, peak, 1), out=x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, np.maximum(norms, 1e-12), out=x)
    return x


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    """float32 unit vectors along `dim` (a new tensor); zero rows stay zero."""
    x = x.float()
    peak = x.abs().amax(dim=dim, keepdim=True)
    return F.normalize(x / torch.where(peak > 0, peak, 1.0), dim=dim)


def moments(blocks: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation of row blocks (N_i, D), summed in float64 on
    the blocks' device, so millions of rows neither overflow nor lose digits."""
    total = squares = None
    n = 0
    for block in blocks:
        block = block.double()
        if total is None:
            total, squares = block.sum(0), block.square().sum(0)
        else:
            total += block.sum(0)
            squares += block.square().sum(0)
        n += block.shape[0]
    if total is None or n == 0:
        raise ValueError("cannot compute feature statistics from zero rows")
    mean = total / n
    return mean, (squares / n - mean.square()).clamp_min(0).sqrt()


def standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x - mean) / std in float32; dimensions without spread are left centred, not divided."""
    return (x.float() - mean) / std


__all__ = [
    "NORMALIZATIONS",
    "check_mode",
    "l2_normalize",
    "l2_normalize_rows",
    "moments",
    "standardize",
]
