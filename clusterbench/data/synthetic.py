"""The embedded default dataset: a generated stand-in for precomputed image features.

Not Gaussian blobs. It reproduces the regimes the paper studies:
- a class hierarchy: superclasses -> classes (class means scattered around their superclass
  mean, so sibling classes are confusable and superclass labels are meaningful);
- a long-tailed class histogram (most/least frequent class ratio = `imbalance`);
- irregular classes: each class is a chain of 1..`max_modes` sub-modes joined by densely
  sampled segments, so a class is elongated and bent; nearest-neighbour links follow the
  chain while a spherical k-means cell does not.
The result is written once as an ordinary feature store (plus `superclasses.npy`) under the
cache directory, keyed by its parameters, so every later run opens it like user data.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clusterbench.core.atomic import write_dir_atomically
from clusterbench.core.errors import ConfigError
from clusterbench.core.fingerprint import digest
from clusterbench.data.store_writer import write_store

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int = 100
    num_superclasses: int = 10
    num_train: int = 20000
    num_val: int = 5000
    dim: int = 64
    imbalance: float = 10.0
    max_modes: int = 4
    superclass_radius: float = 4.0
    class_spread: float = 0.3
    mode_rank: int = 2
    mode_step: float = 2.0
    noise: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"dataset.num_classes must be >= 2, got {self.num_classes}")
        if not 1 <= self.num_superclasses <= self.num_classes:
            raise ConfigError(
                f"dataset.num_superclasses must be in [1, num_classes={self.num_classes}], "
                f"got {self.num_superclasses}"
            )
        for key in ("num_train", "num_val"):
            if getattr(self, key) < self.num_classes:
                raise ConfigError(
                    f"dataset.{key}={getattr(self, key)} is smaller than num_classes="
                    f"{self.num_classes}; every class needs at least one sample"
                )
        if self.dim < 2:
            raise ConfigError(f"dataset.dim must be >= 2, got {self.dim}")
        if self.imbalance < 1:
            raise ConfigError(
                f"dataset.imbalance is a max/min count ratio >= 1, got {self.imbalance}"
            )
        if self.max_modes < 1:
            raise ConfigError(f"dataset.max_modes must be >= 1, got {self.max_modes}")
        if self.noise < 0:
            raise ConfigError(f"dataset.noise must be >= 0, got {self.noise}")

    @property
    def key(self) -> str:
        return digest({"v": FORMAT_VERSION, **asdict(self)}, length=12)


def class_counts(
    total: int, num_classes: int, imbalance: float, rng: np.random.Generator
) -> np.ndarray:
    """Exponentially decaying class sizes (ratio `imbalance`), in random class order, sum = total."""
    profile = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    counts = np.maximum(1, np.floor(profile / profile.sum() * total)).astype(np.int64)
    counts[0] += total - counts.sum()  # rounding remainder goes to the head class
    return counts[rng.permutation(num_classes)]


def _sample_split(
    counts: np.ndarray, modes: list[np.ndarray], spec: SyntheticSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(spec.num_classes), counts)
    features = np.empty((labels.size, spec.dim), dtype=np.float32)
    for c in range(spec.num_classes):
        rows = np.flatnonzero(labels == c)
        chain = modes[c]  # (M, D) sub-mode centres, consecutive ones joined by a segment
        if chain.shape[0] == 1:
            base = np.repeat(chain, rows.size, axis=0)
        else:
            seg = rng.integers(0, chain.shape[0] - 1, size=rows.size)
            t = rng.random(rows.size)[:, None]
            base = (1 - t) * chain[seg] + t * chain[seg + 1]
        noise = rng.standard_normal((rows.size, spec.dim)) * (spec.noise / np.sqrt(spec.dim))
        features[rows] = base + noise
    order = rng.permutation(labels.size)
    return features[order], labels[order]


def generate(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """All arrays of the synthetic store, deterministic in `spec` (seed included)."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    d = spec.dim
    supers = rng.standard_normal((spec.num_superclasses, d))
    supers *= spec.superclass_radius / np.linalg.norm(supers, axis=1, keepdims=True)
    # Each superclass owns a low-dimensional subspace in which its classes' chains wander:
    # sibling chains cross there (k-means cells mix them) while a small class-specific offset
    # outside it keeps each class linearly separable and its neighbours mostly its own.
    bases = np.linalg.qr(rng.standard_normal((spec.num_superclasses, d, spec.mode_rank)))[0]
    # Every superclass gets at least one class, the rest are assigned at random.
    extra = rng.integers(0, spec.num_superclasses, spec.num_classes - spec.num_superclasses)
    superclass_of = np.concatenate([np.arange(spec.num_superclasses), extra])
    superclass_of = superclass_of[rng.permutation(spec.num_classes)]
    offsets = rng.standard_normal((spec.num_classes, d))
    offsets *= spec.class_spread / np.linalg.norm(offsets, axis=1, keepdims=True)
    centres = supers[superclass_of] + offsets
    modes = []
    for c in range(spec.num_classes):
        m = int(rng.integers(1, spec.max_modes + 1))
        steps = rng.standard_normal((m, spec.mode_rank))
        steps *= spec.mode_step / np.linalg.norm(steps, axis=1, keepdims=True).clip(1e-12)
        walk = np.cumsum(steps, axis=0) @ bases[superclass_of[c]].T  # (m, d), first mode off-centre
        modes.append(centres[c] + walk)
    train_counts = class_counts(spec.num_train, spec.num_classes, spec.imbalance, rng)
    # Validation follows the training histogram, as a held-out split of a real dataset does.
    val_counts = np.maximum(1, np.round(train_counts / train_counts.sum() * spec.num_val)).astype(
        np.int64
    )
    train, train_labels = _sample_split(train_counts, modes, spec, rng)
    val, val_labels = _sample_split(val_counts, modes, spec, rng)
    return {
        "train": train,
        "train_labels": train_labels,
        "val": val,
        "val_labels": val_labels,
        "superclasses": superclass_of.astype(np.int64),
    }


def materialize(spec: SyntheticSpec, cache_dir: str | os.PathLike) -> Path:
    """Write the store for `spec` under cache_dir once (atomically) and return its path."""

    def write(tmp: Path) -> None:
        arrays = generate(spec)
        classes = [f"s{s:02d}_c{c:03d}" for c, s in enumerate(arrays["superclasses"])]
        meta = {
            "extractor": "synthetic",
            "dim": spec.dim,
            "dtype": "float32",
            "made_by": "clusterbench.data.synthetic",
            "spec": asdict(spec),
        }
        write_store(tmp, arrays, classes=classes, meta=meta)

    return write_dir_atomically(Path(cache_dir).expanduser() / "synthetic" / spec.key, write)
