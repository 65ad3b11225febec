"""Dataset builders named by `conf/dataset/*.yaml`: each returns a BenchmarkView.

`synthetic` generates (once, cached) the embedded default; `digits` caches scikit-learn's
bundled handwritten digits as a store (real data, no download); `store` opens any directory
in the documented format (`dataset=custom dataset.path=DIR`). The paper's named benchmarks are
views built in `clusterbench.benchmarks`.
"""

from __future__ import annotations

import numpy as np

from clusterbench.core.errors import ConfigError
from clusterbench.data import digits as digits_store
from clusterbench.data.store import FeatureStore
from clusterbench.data.synthetic import SyntheticSpec, materialize
from clusterbench.data.view import BenchmarkView, LabelSets


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
    view.coarser_levels = {"superclasses": int(np.unique(superclass_of).size)}
    return view


def digits(cache_dir: str, name: str = "digits") -> BenchmarkView:
    """scikit-learn's handwritten digits: 64 pixel features, 10 classes, 1437 / 360 samples."""
    return BenchmarkView.whole(FeatureStore.open(digits_store.materialize(cache_dir)), name)


def store(
    path: str | None,
    name: str = "custom",
    check_finite: bool = True,
    cache_dir: str | None = None,
) -> BenchmarkView:
    """A store directory as one benchmark: all samples, the store's labels."""
    if not path:
        raise ConfigError(
            "dataset.path is not set; run e.g. `python -m clusterbench "
            "dataset=custom dataset.path=/path/to/store`"
        )
    store = FeatureStore.open(path, check_finite=check_finite, cache_dir=cache_dir)
    return BenchmarkView.whole(store, name)
