"""View cache: each benchmark's index arrays, labels and label sets, built once per base store.

A view is keyed by the base store's fingerprint, the benchmark kind and parameters, the
fingerprints of its input files (relabelling, accuracies, ReaL labels) and the tree file, so
a changed input builds a new view and never reuses a stale one. Entries live under
`<cache_dir>/views/<key>/` as plain .npy files plus meta.json, written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import default_tree_path
from clusterbench.core.atomic import write_dir_atomically
from clusterbench.core.fingerprint import digest, fingerprint_files
from clusterbench.data.view import BenchmarkView, LabelSets

if TYPE_CHECKING:
    from clusterbench.benchmarks.source import BaseStore

CACHE_VERSION = 1


@dataclass
class ViewArrays:
    """What a builder computes: everything of a BenchmarkView except the store."""

    train_labels: np.ndarray
    val_labels: np.ndarray
    num_classes: int
    class_names: list[str]
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    val_label_sets: LabelSets | None = None


_ARRAYS = ("train_labels", "val_labels", "train_index", "val_index")


def file_fingerprints(files: dict[str, Path]) -> dict[str, str]:
    """Content fingerprint of each input file, or of every file inside an input directory."""
    out = {}
    for label, path in files.items():
        listed = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        out[label] = fingerprint_files(listed)
    return out


def view_key(base: BaseStore, kind: str, params: dict, files: dict[str, Path]) -> str:
    payload = {
        "v": CACHE_VERSION,
        "store": base.store.fingerprint,
        "family": base.family,
        "kind": kind,
        "params": params,
        "files": file_fingerprints(files),
        "tree": fingerprint_files([default_tree_path()]),
    }
    return digest(payload)


def _save(root: Path, arrays: ViewArrays, info: dict) -> None:
    for name in _ARRAYS:
        value = getattr(arrays, name)
        if value is not None:
            np.save(root / f"{name}.npy", np.asarray(value, dtype=np.int64))
    if arrays.val_label_sets is not None:
        np.save(root / "val_sets_indptr.npy", arrays.val_label_sets.indptr)
        np.save(root / "val_sets_indices.npy", arrays.val_label_sets.indices)
    meta = {"num_classes": arrays.num_classes, "class_names": arrays.class_names, **info}
    (root / "meta.json").write_text(json.dumps(meta))


def _load(root: Path) -> ViewArrays:
    meta = json.loads((root / "meta.json").read_text())

    def arr(name: str) -> np.ndarray | None:
        file = root / f"{name}.npy"
        return np.load(file) if file.exists() else None

    sets = None
    if (root / "val_sets_indptr.npy").exists():
        sets = LabelSets(arr("val_sets_indptr"), arr("val_sets_indices"))  # type: ignore[arg-type]
    return ViewArrays(
        **{name: arr(name) for name in _ARRAYS},  # type: ignore[arg-type]
        num_classes=int(meta["num_classes"]),
        class_names=list(meta["class_names"]),
        val_label_sets=sets,
    )


def cached_view(
    name: str,
    base: BaseStore,
    kind: str,
    params: dict,
    build: Callable[[], ViewArrays],
    files: dict[str, Path] | None = None,
) -> BenchmarkView:
    """The view `kind(params)` of `base`: loaded from the cache, or built and stored there.

    `params` defines the view (they land in `view.params`, which keys the kNN cache);
    `files` are the input files it reads, fingerprinted into the key.
    """
    key = view_key(base, kind, params, files or {})
    root = base.cache_dir / "views" / key
    if (root / "meta.json").exists():
        arrays = _load(root)
    else:
        arrays = build()
        info = {"kind": kind, "params": params, "store": str(base.store.path)}
        write_dir_atomically(root, lambda tmp: _save(tmp, arrays, info))
    return BenchmarkView(
        name=name,
        store=base.store,
        train_labels=arrays.train_labels,
        val_labels=arrays.val_labels,
        num_classes=arrays.num_classes,
        train_index=arrays.train_index,
        val_index=arrays.val_index,
        class_names=arrays.class_names,
        val_label_sets=arrays.val_label_sets,
        params={**params, "kind": kind, "family": base.family, "view_key": key},
    )
