"""Dataset builders named by `conf/dataset/*.yaml`: each returns a BenchmarkView.

`synthetic` generates (once, cached) the embedded default; `store` opens any directory in
the documented format, either given directly (`dataset=custom dataset.path=DIR`) or
resolved from `paths.features_root/<source>/<extractor>` for named datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clusterbench.errors import ConfigError
from clusterbench.store import FeatureStore
from clusterbench.synthetic import SyntheticSpec, materialize
from clusterbench.view import BenchmarkView, LabelSets


def synthetic(cache_dir: str, name: str = "synthetic", **params) -> BenchmarkView:
    """The generated default. Label sets S_L = the GT class and its sibling classes (same
    superclass), so top1->L measures correctness at the superclass level."""
    unknown = set(params) - set(SyntheticSpec.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"unknown synthetic dataset parameter(s) {sorted(unknown)}; "
            f"expected some of {sorted(SyntheticSpec.__dataclass_fields__)}"
        )
    spec = SyntheticSpec(**params)
    path = materialize(spec, cache_dir)
    view = BenchmarkView.whole(FeatureStore.open(path), name)
    view.params = dict(params)
    superclass_of = np.load(path / "superclasses.npy")
    siblings = [np.flatnonzero(superclass_of == s) for s in superclass_of]
    view.val_label_sets = LabelSets.from_class_sets(view.val_labels, siblings)
    view.params["superclasses"] = int(superclass_of.max() + 1)
    return view


def store(
    path: str | None,
    name: str = "custom",
    source: str | None = None,
    extractor: str | None = None,
    check_finite: bool = True,
) -> BenchmarkView:
    """A store directory as one benchmark: all samples, the store's labels."""
    if not path:
        raise ConfigError(
            "dataset.path is not set; run e.g. `python -m clusterbench "
            "dataset=custom dataset.path=/path/to/store`"
        )
    if extractor == "none" and source:
        raise ConfigError(
            f"dataset={name} reads features of a named extractor; add e.g. "
            f"extractor=ibot_vitl (see conf/extractor/)"
        )
    root = Path(path).expanduser()
    if source and not root.is_dir():
        raise ConfigError(
            f"no features for dataset={name} extractor={extractor} at {root}; expected a "
            "feature store there (see README: Feature store), or set paths.features_root"
        )
    return BenchmarkView.whole(FeatureStore.open(root, check_finite=check_finite), name)
