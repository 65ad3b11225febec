"""Decoding images for extraction, and what identifies an image on disk.

Decoding turns every mode (grayscale, RGBA, palette, CMYK, 16-bit) into 8-bit RGB; a file that
does not decode is reported, not raised. An image's stamp (size, mtime_ns) tells a resumed
extraction which finished shards read images that changed since.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clusterbench.producers.extract.images import PathTable

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode; 16-bit and 32-bit integer gray is scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if image.mode in _SIXTEEN_BIT or values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode a whole file (truncation raises here, not later) as 8-bit RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


class ImageDataset(torch.utils.data.Dataset):
    """Items {image, index, ok, error}: a file that does not decode gives a blank image with
    ok=False and the reason, so one bad file never stops a run."""

    def __init__(self, root: Path, files: PathTable, transform: Callable) -> None:
        self.root, self.files, self.transform = Path(root), files, transform
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)

    def blank(self) -> torch.Tensor:
        if self._blank is None:
            self._blank = torch.zeros_like(self.transform(Image.new("RGB", (256, 256))))
        return self._blank

    def __getitem__(self, index: int) -> dict:
        path = self.root / self.files[index]
        size, mtime_ns = file_stamp(path)  # before reading: a later change shows on resume
        item = {"index": index, "size": size, "mtime_ns": mtime_ns}
        try:
            image = load_rgb(path)
        except Exception as exc:  # decoders raise many types (OSError, SyntaxError, ...)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return {**item, "image": self.blank(), "ok": False, "error": reason}
        return {**item, "image": self.transform(image), "ok": True, "error": ""}


# ------------------------------------------------------------------------------ image stamps
def file_stamp(path: str | os.PathLike) -> tuple[int, int]:
    """What identifies an image's content on resume: (size, mtime_ns); (-1, -1) when missing.
    Enough to notice a file rewritten, replaced or removed; contents are not hashed."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def stamps(root: Path, files: PathTable, start: int, stop: int) -> np.ndarray:
    """(stop - start, 2) int64: `file_stamp` of rows [start, stop)."""
    rows = [file_stamp(root / files[i]) for i in range(start, stop)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def stamp_digest(rows: np.ndarray) -> str:
    """The fingerprint of a shard's images recorded in its manifest line."""
    return hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]
