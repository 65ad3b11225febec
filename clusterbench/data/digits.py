"""The second embedded dataset: scikit-learn's bundled handwritten digits as a feature store.

Real data that ships with scikit-learn (1797 8x8 images, 10 classes), so it needs no download
and no feature extractor: the features are the 64 pixel intensities / 16 (in [0, 1]), the
split is `train_test_split(test_size=0.2, stratify=y, random_state=0)`: 1437 train / 360 val.
It is small enough for TEMI and SCANv2 to train in seconds on a CPU, and it is the data of the
side-by-side comparison with the reference implementation (`scripts/parity.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clusterbench.core.atomic import write_dir_atomically
from clusterbench.data.store_writer import write_store

FORMAT_VERSION = 1
TEST_SIZE = 0.2
SPLIT_SEED = 0


def load_split() -> dict[str, np.ndarray]:
    """The digits features and labels, split as documented above."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return {"train": x_train, "train_labels": y_train, "val": x_val, "val_labels": y_val}


def materialize(cache_dir: str | os.PathLike) -> Path:
    """Write the digits store under cache_dir once (atomically) and return its path."""
    import sklearn

    def write(tmp: Path) -> None:
        meta = {
            "extractor": "pixels",
            "dim": 64,
            "dtype": "float32",
            "made_by": "clusterbench.data.digits",
            "source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
            "features": "pixel intensities / 16",
            "split": f"train_test_split(test_size={TEST_SIZE}, stratify=y, "
            f"random_state={SPLIT_SEED})",
        }
        write_store(tmp, load_split(), classes=[str(c) for c in range(10)], meta=meta)

    return write_dir_atomically(
        Path(cache_dir).expanduser() / "digits" / f"v{FORMAT_VERSION}", write
    )
