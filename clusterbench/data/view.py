"""BenchmarkView: a subset and relabelling of a FeatureStore, without copying features.

Every benchmark (the whole store, a frequency band, coarse labels, leaf classes, ...) is a
view: index arrays into the store's splits, labels in the benchmark's own label space, and
optional multi-label sets S_L for the validation samples (section 4.4 of the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clusterbench.core.fingerprint import digest
from clusterbench.data.rows import ConcatenatedRows, FeatureRows
from clusterbench.data.store import FeatureStore


@dataclass
class LabelSets:
    """Per-sample label sets in CSR form: sample i may be any of indices[indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @classmethod
    def from_class_sets(cls, labels: np.ndarray, class_sets: list[list[int]]) -> LabelSets:
        """Expand per-class sets (e.g. GT plus ancestors) to per-sample sets."""
        sizes = np.array([len(s) for s in class_sets], dtype=np.int64)
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in class_sets])
        return cls.expand(np.concatenate([[0], np.cumsum(sizes)]), flat, labels)

    @classmethod
    def expand(cls, indptr: np.ndarray, indices: np.ndarray, labels: np.ndarray) -> LabelSets:
        """Per-sample sets from per-class CSR sets (`indptr` (C+1,), `indices`), gathered
        without a Python loop."""
        sizes = np.diff(indptr)[labels]
        out_ptr = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(sizes, out=out_ptr[1:])
        offsets = np.arange(out_ptr[-1], dtype=np.int64) - np.repeat(out_ptr[:-1], sizes)
        return cls(indptr=out_ptr, indices=indices[np.repeat(indptr[:-1][labels], sizes) + offsets])


@dataclass(frozen=True)
class SampledLabels:
    """Evaluate against one label drawn from each val sample's set S_L, `repeats` times
    (seeded by `seed`), instead of against `val_labels` (ImageNet-1K ReaL, section 4.4)."""

    repeats: int = 50
    seed: int = 0


@dataclass
class BenchmarkView:
    """What a method and the evaluation see: train/val rows and labels of one benchmark."""

    name: str
    store: FeatureStore
    train_labels: np.ndarray | None  # None: an unlabelled store, clustered without grading
    val_labels: np.ndarray | None
    num_classes: int | None
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    class_names: list[str] | None = None
    val_label_sets: LabelSets | None = None
    params: dict = field(default_factory=dict)
    evaluation: SampledLabels | None = None  # None: score against val_labels
    # Coarser levels of classes the view knows ({"superclasses": 10}), to compare a K estimate
    # with; not part of the fingerprint (it describes the labels, not the rows).
    coarser_levels: dict[str, int] = field(default_factory=dict)
    # Further representation spaces of the same rows (row-aligned stores, e.g. CLIP and DINOv2
    # features of the same images), read through the same index arrays as `store`
    # (`dataset.spaces`, data/spaces.py). With any, `train` / `val` are the concatenation of
    # the L2-normalised spaces, each scaled by its weight in `space_weights` (`store` first).
    extra_stores: list[FeatureStore] = field(default_factory=list)
    space_weights: list[float] | None = None

    @property
    def train(self) -> FeatureRows | ConcatenatedRows:
        return self._rows("train")

    @property
    def val(self) -> FeatureRows | ConcatenatedRows:
        return self._rows("val")

    def _rows(self, split: str) -> FeatureRows | ConcatenatedRows:
        spaces = self.spaces(split)
        if len(spaces) == 1:
            return spaces[0]
        return ConcatenatedRows(spaces, self.space_weights or [1.0] * len(spaces))

    def spaces(self, split: str) -> list[FeatureRows]:
        """The split's rows in every representation space, `store`'s first."""
        index = self.train_index if split == "train" else self.val_index
        return [
            FeatureRows(getattr(s, split).features, index) for s in [self.store, *self.extra_stores]
        ]

    @property
    def dim(self) -> int:
        return self.train.dim

    @property
    def labelled(self) -> bool:
        return self.train_labels is not None

    def files(self, split: str) -> list[str] | None:
        """Image paths of the split's rows, in view order, when the store lists them."""
        file = self.store.files_path(split)
        if file is None:
            return None
        paths = file.read_text(encoding="utf-8").splitlines()
        index = self.train_index if split == "train" else self.val_index
        return paths if index is None else [paths[i] for i in index]

    def known_levels(self) -> dict[str, int]:
        """Classes present in the train split, then every coarser level the view knows."""
        if not self.labelled:
            return {}
        present = int(np.unique(self.train_labels).size)
        return {"classes": present, **self.coarser_levels}

    @property
    def fingerprint(self) -> str:
        """Store fingerprint plus the view definition: keys the kNN cache of this view."""
        described = {"store": self.store.fingerprint, "name": self.name, "params": self.params}
        if self.extra_stores:  # the kNN pairs of several spaces come from their concatenation
            described["spaces"] = [s.fingerprint for s in self.extra_stores]
            described["space_weights"] = self.space_weights
        return digest(described)

    @classmethod
    def whole(cls, store: FeatureStore, name: str) -> BenchmarkView:
        """The store as it is: every sample, the store's own labels."""
        return cls(
            name=name,
            store=store,
            train_labels=store.train.labels,
            val_labels=store.val.labels,
            num_classes=store.num_classes,
            class_names=store.classes,
        )

    def summary(self) -> dict:
        summary = self._summary()
        if self.extra_stores:
            summary["spaces"] = [str(s.path) for s in [self.store, *self.extra_stores]]
            summary["space_weights"] = self.space_weights
        return summary

    def _summary(self) -> dict:
        if not self.labelled:
            return {
                "name": self.name,
                "store": str(self.store.path),
                "labelled": False,
                "num_train": len(self.train),
                "num_val": len(self.val),
                "dim": self.dim,
            }
        counts = np.bincount(self.train_labels, minlength=self.num_classes)
        present = counts[counts > 0]
        return {
            "name": self.name,
            "store": str(self.store.path),
            "num_classes": int(self.num_classes),
            "num_train": len(self.train_labels),
            "num_val": len(self.val_labels),
            "dim": self.dim,
            "train_class_frequency": {
                "min": int(present.min()) if present.size else 0,
                "median": float(np.median(present)) if present.size else 0.0,
                "max": int(present.max()) if present.size else 0,
            },
            "imbalance_ratio": float(present.max() / present.min()) if present.size else 0.0,
            "has_label_sets": self.val_label_sets is not None,
        }
