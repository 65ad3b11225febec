"""The base feature store a benchmark indexes into, and its labels in the family's class ids.

`dataset.base` picks the store:
- a path: real features (ImageNet-21K for the tree benchmarks, ImageNet-1K for in1k*);
- `synthetic`: the generated stand-in (`clusterbench.benchmarks.imagenet21k.world`) at `dataset.synthetic`
  scale, whatever the extractor;
- null (default): the named features at `dataset.path` (<features_root>/<source>/<extractor>)
  when an extractor is chosen, else the synthetic stand-in, so every benchmark runs out of
  the box and `extractor=ibot_vitl` switches to real features without further settings.

Labels are translated once into the family's class ids: the ImageNet-21K tree's class ids
(timm's imagenet21k_miil_w21_synsets.txt order) or the standard ImageNet-1K ids (sorted
wnids). The store's classes.txt names its labels by wnid; without one, its labels must
already be those ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clusterbench.benchmarks.imagenet21k.timm import in1k_wnids
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.imagenet21k.world import (
    SyntheticIn1kSpec,
    SyntheticIn21kSpec,
    make_spec,
    materialize_in1k,
    materialize_in21k,
)
from clusterbench.core.config import plain
from clusterbench.core.errors import ConfigError, StoreError
from clusterbench.data.store import FeatureStore

FAMILIES = ("in21k", "in1k")
FAMILY_TITLE = {"in21k": "ImageNet-21K-P classes", "in1k": "ImageNet-1K classes"}


@dataclass
class BaseStore:
    """An opened base store plus what the view builders need to know about it."""

    store: FeatureStore
    family: str
    cache_dir: Path
    synthetic: bool
    family_classes: tuple[str, ...] = field(repr=False, default=())

    @cached_property
    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) labels as family class ids."""
        lookup = class_lookup(self.store, self.family_classes, FAMILY_TITLE[self.family])
        return tuple(  # type: ignore[return-value]
            s.labels if lookup is None else lookup[s.labels]
            for s in (self.store.train, self.store.val)
        )

    def extra_file(self, *parts: str) -> Path | None:
        """A file the base store ships next to its features (the synthetic store does)."""
        file = self.store.path.joinpath(*parts)
        return file if file.exists() else None


OPEN_BASE_KEYS = ("base", "path", "source", "extractor", "cache_dir", "check_finite", "synthetic")


def base_arguments(dataset: Any) -> dict:
    """The `open_base` arguments in a benchmark's dataset config (a command that opens the
    base store itself, such as `hzr`, passes them on)."""
    ds = plain(dataset)
    return {k: ds[k] for k in OPEN_BASE_KEYS if k in ds}


def open_base(
    family: str,
    name: str,
    base: str | None = None,
    path: str | None = None,
    source: str | None = None,
    extractor: str | None = "none",
    cache_dir: str = ".cache",
    check_finite: bool = True,
    synthetic: dict | None = None,
) -> BaseStore:
    """Resolve and open the base store of a benchmark (see the module docstring)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown benchmark family {family!r}; expected one of {FAMILIES}")
    cache = Path(cache_dir).expanduser()
    classes = load_tree().class_wnids if family == "in21k" else tuple(in1k_wnids())
    if base == "synthetic" or (base is None and extractor in (None, "none")):
        if family == "in21k":
            spec = make_spec(SyntheticIn21kSpec, dict(synthetic or {}))
            root = materialize_in21k(spec, cache)  # type: ignore[arg-type]
        else:
            spec = make_spec(SyntheticIn1kSpec, dict(synthetic or {}))
            root = materialize_in1k(spec, cache)  # type: ignore[arg-type]
        store = FeatureStore.open(root, check_finite=False)  # generated: finite by design
        return BaseStore(store, family, cache, synthetic=True, family_classes=classes)
    root = Path(base or path or "").expanduser()
    if not root.is_dir():
        if base:
            raise ConfigError(
                f"dataset.base={root} is not a directory; expected a feature store with "
                f"{FAMILY_TITLE[family]} (see docs/data.md: The feature store), or dataset.base=synthetic"
            )
        raise ConfigError(
            f"no features for dataset={name} extractor={extractor} at {root}; expected a "
            "feature store there (see docs/data.md: The feature store), or set paths.features_root or "
            "dataset.base (extractor=none uses the synthetic stand-in)"
        )
    store = FeatureStore.open(root, check_finite=check_finite, cache_dir=cache)
    store.require_labels(f"benchmark {name}")  # its classes come from the store's labels
    return BaseStore(store, family, cache, synthetic=False, family_classes=classes)


def class_lookup(store: FeatureStore, classes: tuple[str, ...], title: str) -> np.ndarray | None:
    """(num store classes,) family class id of each store label; None when they coincide.

    Without classes.txt the store's labels must already be family ids (< len(classes)).
    """
    if store.classes is None:
        for split in ("train", "val"):
            top = int(store.split(split).labels.max(initial=-1))
            if top >= len(classes):
                raise StoreError(
                    f"{store.path / f'{split}_labels.npy'}: label {top} is out of range for "
                    f"the {len(classes)} {title}; add a classes.txt naming each label by wnid, "
                    f"or use labels 0..{len(classes) - 1} in the standard class order"
                )
        return None
    if tuple(store.classes) == classes:
        return None
    index = {w: i for i, w in enumerate(classes)}
    unknown = [w for w in store.classes if w not in index]
    if unknown:
        raise StoreError(
            f"{store.path / 'classes.txt'}: {len(unknown)} of {len(store.classes)} class ids "
            f"are not {title} (e.g. {', '.join(unknown[:3])}); expected wnids such as "
            f"{classes[0]}"
        )
    return np.array([index[w] for w in store.classes], dtype=np.int64)
