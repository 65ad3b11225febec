"""Thumbnails of the rows an atlas shows: made in parallel with PIL, cached by row, resumable.

A thumbnail is `<site>/thumbs/<row>.jpg`; one that exists is kept, so a rerun (or a site of
another run of the same store) only makes what is missing. Images come from the store's
`<split>_files.txt` under `images.root`; an unreadable or missing image is counted and shown
as the placeholder. Rows of a store without images can be drawn from their own features when
those are pixels (`images.features_shape=[8,8]` for the embedded digits).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clusterbench.core.progress import progress
from clusterbench.data.rows import Rows

PLACEHOLDER = "missing.svg"


@dataclass
class ThumbnailSettings:
    size: int = 128  # longest side, pixels
    quality: int = 85  # JPEG quality
    workers: int = 8  # threads: PIL releases the GIL while decoding and resizing


def thumbnail_name(row: int) -> str:
    return f"{row}.jpg"


def _make(source: Path, target: Path, settings: ThumbnailSettings) -> bool:
    """One thumbnail, written atomically; False when the image cannot be read."""
    try:
        with Image.open(source) as image:
            image.draft("RGB", (settings.size, settings.size))  # JPEG: decode at reduced size
            image = image.convert("RGB")
            image.thumbnail((settings.size, settings.size))
            partial = target.with_suffix(f".{os.getpid()}.part")
            image.save(partial, "JPEG", quality=settings.quality)
            partial.replace(target)
        return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def from_files(
    rows: list[int], paths: list[str], root: Path | None, out: Path, settings: ThumbnailSettings
) -> dict[int, bool]:
    """Thumbnails of `rows` from their image files; returns row -> readable."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if not (out / thumbnail_name(r)).exists()]
    done = {r: True for r in rows if r not in set(todo)}

    def one(row: int) -> tuple[int, bool]:
        source = Path(paths[row])
        source = source if source.is_absolute() or root is None else root / source
        return row, _make(source, out / thumbnail_name(row), settings)

    with ThreadPoolExecutor(max(1, settings.workers)) as pool:
        for row, ok in progress(pool.map(one, todo), "thumbnails", len(todo)):
            done[row] = ok
    return done


def from_features(
    rows: list[int], features: Rows, shape: tuple[int, int], out: Path, settings: ThumbnailSettings
) -> dict[int, bool]:
    """Rows whose features are pixels (row-major, any range) drawn as grey images."""
    out.mkdir(parents=True, exist_ok=True)
    todo = sorted(r for r in rows if not (out / thumbnail_name(r)).exists())
    if todo:
        pixels = np.asarray(features.take(np.asarray(todo)), np.float32)
        if pixels.shape[1] != shape[0] * shape[1]:
            from clusterbench.core.errors import ConfigError

            raise ConfigError(
                f"images.features_shape={list(shape)} holds {shape[0] * shape[1]} values but "
                f"the rows have {pixels.shape[1]} features"
            )
        low, high = pixels.min(axis=1, keepdims=True), pixels.max(axis=1, keepdims=True)
        grey = 255 * (1 - (pixels - low) / np.maximum(high - low, 1e-12))  # ink dark on white
        for row, values in zip(todo, grey.astype(np.uint8), strict=True):
            image = Image.fromarray(values.reshape(shape), mode="L")
            image = image.resize((settings.size, settings.size), Image.NEAREST)
            image.save(out / thumbnail_name(row), "JPEG", quality=settings.quality)
    return dict.fromkeys(rows, True)
