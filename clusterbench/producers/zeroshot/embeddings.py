"""Class text embeddings: a user's precomputed file, or open_clip's text tower (`text`).

File format (`zeroshot.text_embeddings=FILE.npy`): float (C, D), one row per ImageNet-21K
class in the shipped tree's order (class id = row), D = the image feature dimension. Rows are
L2-normalised here anyway, so an unnormalised file gives the same result; NaN, inf or zero
rows are refused because they would silently win or lose every comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clusterbench.core.errors import BenchmarkFileError, ConfigError

# open_clip's CLIP models learn logit_scale = log(100); a file carries no scale of its own.
DEFAULT_LOGIT_SCALE = 100.0


@dataclass
class ClassEmbeddings:
    """(C, D) unit rows in tree order plus the temperature that turns cosines into logits."""

    vectors: np.ndarray
    logit_scale: float = DEFAULT_LOGIT_SCALE
    info: dict = field(default_factory=dict)


def load_class_embeddings(path: str | Path, num_classes: int) -> np.ndarray:
    """(num_classes, D) float32 unit rows from a .npy file, validated."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BenchmarkFileError(
            f"zeroshot.text_embeddings={file} does not exist; expected a .npy file of shape "
            f"({num_classes}, D), one row per class in tree order"
        )
    try:
        emb = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BenchmarkFileError(f"{file} is not a readable .npy array ({exc})") from None
    if emb.ndim != 2 or emb.shape[0] != num_classes or emb.dtype.kind != "f":
        raise BenchmarkFileError(
            f"{file}: expected float class embeddings of shape ({num_classes}, D), one row per "
            f"class in tree order, found {emb.dtype} {emb.shape}"
        )
    return check_rows(emb.astype(np.float32), str(file))


def check_rows(emb: np.ndarray, origin: str) -> np.ndarray:
    """Unit rows; refuses NaN, inf and all-zero rows naming the first bad class."""
    norms = np.linalg.norm(emb, axis=1)
    bad = ~np.isfinite(emb).all(axis=1) | ~(norms > 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BenchmarkFileError(
            f"{origin}: {int(bad.sum())} class embedding rows are NaN, infinite or zero (first: "
            f"class {first}); every class needs a finite non-zero embedding"
        )
    return emb / norms[:, None]


def check_dims(image_dim: int, emb: ClassEmbeddings, origin: str) -> None:
    """Image and text embeddings must live in the same joint space."""
    dim = int(emb.vectors.shape[1])
    if dim != image_dim:
        raise ConfigError(
            f"image features have dimension {image_dim} but the class text embeddings "
            f"({origin}) have {dim}; both must come from the same CLIP model"
        )


def class_embeddings(
    zeroshot: dict,
    extractor: dict,
    store_meta: dict,
    num_classes: int,
    lemma_data=None,
    cache_dir: str | Path = ".cache",
    device: str = "auto",
    needed: np.ndarray | None = None,
) -> ClassEmbeddings:
    """The class embeddings a command uses: the user's file, else open_clip's text tower.

    `lemma_data()` returns (train rows, tree class labels) for the lemma vote; it is called
    only when the vote needs images; `needed` (class ids) limits the text work to them."""
    scale = zeroshot.get("logit_scale")
    if zeroshot.get("text_embeddings"):
        vectors = load_class_embeddings(zeroshot["text_embeddings"], num_classes)
        return ClassEmbeddings(
            vectors,
            float(scale) if scale is not None else DEFAULT_LOGIT_SCALE,
            {"source": str(zeroshot["text_embeddings"])},
        )
    from clusterbench.producers.zeroshot.text import text_class_embeddings

    return text_class_embeddings(
        zeroshot, extractor, store_meta, lemma_data, Path(cache_dir), device, needed=needed
    )
