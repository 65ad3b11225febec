"""The one writer of the feature-store format that `data/store.py` reads.

A store is a directory: `<split>.npy` (N x D features), `<split>_labels.npy` (int64, optional),
`<split>_files.txt` (one image path per row, optional), `classes.txt` (one class id per line)
and `meta.json` (how the features were made). The digits and synthetic datasets, the 21K
stand-in, extraction and the tests all write through here, so the format has one definition.
Writers that stream features (extraction, the 21K stand-in) write `<split>.npy` themselves
with `np.lib.format.open_memmap` and hand the small files to `write_store_files`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val")


def write_store_files(
    root: Path,
    *,
    classes: Sequence[str] | None = None,
    meta: Mapping | None = None,
    files: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """classes.txt, `<split>_files.txt` and meta.json (indented JSON) into `root`."""
    root = Path(root)
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for split, names in (files or {}).items():
        (root / f"{split}_files.txt").write_text("".join(f"{n}\n" for n in names))
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta, indent=2))


def write_store(
    root: Path,
    arrays: Mapping[str, np.ndarray],
    *,
    classes: Sequence[str] | None = None,
    meta: Mapping | None = None,
    files: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """A whole store from in-memory arrays: `arrays` maps file stems (`train`, `train_labels`,
    `val`, `val_labels`, or a writer's extra arrays) to what `<stem>.npy` holds."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", array)
    write_store_files(root, classes=classes, meta=meta, files=files)
    return root
