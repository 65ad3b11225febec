"""Several representation spaces of the same rows: `dataset.spaces=[PATH_OR_EXTRACTOR, ...]`.

A dataset may name further stores whose rows are the same images in the same order (CLIP and
DINOv2 features of one collection, say). They are opened beside the view's own store and
checked row for row (same rows per split, same `*_files.txt`, same labels) before any work.
TURTLE reads each space on its own (`view.spaces(split)`); k-means, TEMI and SCANv2 read their
concatenation, each space L2-normalised and scaled by `dataset.space_weights` (`view.train`),
and the kNN pairs are mined on that concatenation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from clusterbench.core.config import build
from clusterbench.core.errors import ConfigError
from clusterbench.data.store import FeatureStore
from clusterbench.data.view import BenchmarkView

SPACE_KEYS = ("spaces", "space_weights")


def build_view(node: DictConfig) -> BenchmarkView:
    """The `dataset` config group as a view, with the further spaces it names attached."""
    entries = list(node.get("spaces") or [])
    weights = node.get("space_weights")
    resolved = OmegaConf.to_container(node, resolve=True)
    view: BenchmarkView = build(
        OmegaConf.create({k: v for k, v in resolved.items() if k not in SPACE_KEYS})
    )
    if not entries:
        if weights is not None and len(weights) != 1:
            raise ConfigError(
                f"dataset.space_weights={list(weights)}: the dataset has one space, so at most "
                "one weight"
            )
        return view
    extra = [open_space(str(e), node, view.store.path) for e in entries]
    for entry, store in zip(entries, extra, strict=True):
        check_aligned(view.store, store, str(entry))
    view.extra_stores = extra
    view.space_weights = space_weights(weights, 1 + len(extra))
    return view


def open_space(entry: str, node: DictConfig, primary: Path) -> FeatureStore:
    """A store directory, or the name of an extractor whose features sit beside the dataset's
    own (`<features_root>/<source>/<extractor>` for the named benchmarks)."""
    path = Path(entry).expanduser()
    if not path.is_dir() and "/" not in entry and node.get("path"):
        path = Path(str(node.path)).parent / entry
    if not path.is_dir():
        raise ConfigError(
            f"dataset.spaces: {entry!r} is neither a store directory nor an extractor with "
            f"features at {path}; expected a directory in the store format, row-aligned with "
            f"{primary}"
        )
    check_finite = bool(node.get("check_finite", True))
    return FeatureStore.open(path, check_finite=check_finite, cache_dir=node.get("cache_dir"))


def check_aligned(primary: FeatureStore, other: FeatureStore, entry: str) -> None:
    """Same rows per split, same image lists and labels where both have them: one line naming
    the first difference otherwise."""
    if other.path.resolve() == primary.path.resolve():
        raise ConfigError(f"dataset.spaces: {entry!r} is the dataset's own store")
    for split in ("train", "val"):
        mine, theirs = primary.split(split), other.split(split)
        if len(mine) != len(theirs):
            raise ConfigError(
                f"dataset.spaces: {other.path} has {len(theirs):,} {split} rows, the dataset's "
                f"store {primary.path} has {len(mine):,}; the spaces must be row-aligned "
                "(the same images in the same order)"
            )
        if mine.labels is not None and theirs.labels is not None:
            if not np.array_equal(mine.labels, theirs.labels):
                first = int(np.flatnonzero(mine.labels != theirs.labels)[0])
                raise ConfigError(
                    f"dataset.spaces: {other.path} labels {split} row {first} "
                    f"{int(theirs.labels[first])}, the dataset's store "
                    f"{int(mine.labels[first])}; the spaces must be row-aligned"
                )
        files = primary.files_path(split), other.files_path(split)
        if all(files) and files[0].read_bytes() != files[1].read_bytes():
            a, b = (f.read_text(encoding="utf-8").splitlines() for f in files)
            first = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
            raise ConfigError(
                f"dataset.spaces: {files[1]} line {first + 1} is {b[first]!r}, "
                f"{files[0]} has {a[first]!r}; the spaces must list the same images in the "
                "same order"
            )


def space_weights(weights, count: int) -> list[float]:
    """One positive weight per space, the dataset's own first; null: all 1."""
    if weights is None:
        return [1.0] * count
    values = list(weights)
    if len(values) != count or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in values
    ):
        raise ConfigError(
            f"dataset.space_weights={values}: expected {count} positive numbers, one per "
            "space (the dataset's own store first)"
        )
    return [float(w) for w in values]
