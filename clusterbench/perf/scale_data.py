"""The scale benchmark's data: a mixture of classes on the unit sphere (`mixture_on_sphere`),
its exact neighbours (the truth IVF recall is measured against) and its in-memory view.

Class centres are grouped under superclasses (siblings overlap, so k-means ACC is not trivially
100 %), each class a low-rank Gaussian around its centre plus isotropic noise, so neighbours are
local as in real features rather than equidistant. Generated chunk by chunk into one float32
array (1M x 384 = 1.5 GB), nothing else of that size. The exact neighbours come from faiss
Flat inner product over the database in chunks, the partial results merged. Apart from `scale`
(which times the kNN and k-means on it) so that other benchmarks (`perf gpu`) and tests can
generate the same data alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.store import FeatureStore, StoreSplit
from clusterbench.data.synthetic import class_counts
from clusterbench.data.view import BenchmarkView
from clusterbench.neighbours import drop_self


@dataclass(frozen=True)
class MixtureSpec:
    """The generated data set: sizes and the geometry of its classes."""

    rows: int = 1_000_000
    dim: int = 384
    clusters: int = 1000
    superclasses: int = 100
    rank: int = 16  # intrinsic dimension of each class
    spread: float = 0.45  # class centre offset from its superclass direction (radius 1)
    within: float = 0.6  # norm of the variation in the superclass's shared subspace
    noise: float = 0.4  # norm of the isotropic noise
    imbalance: float = 4.0  # most / least frequent class
    seed: int = 0


QUICK = MixtureSpec(rows=6000, dim=32, clusters=20, superclasses=4, rank=4)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mixture_on_sphere(spec: MixtureSpec, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(rows, dim) float32 unit rows and (rows,) int64 labels, filled chunk by chunk.

    Classes of one superclass share its direction (sibling centres at cosine ~1/(1+spread^2)),
    and each class varies along its own `rank`-dimensional random subspace: the 50 nearest
    neighbours are then close in that subspace, the regime where inverted lists work and
    which isotropic blobs in 384-d (all points nearly equidistant) do not have.
    """
    rng = np.random.default_rng(spec.seed)
    supers = _unit(rng.standard_normal((spec.superclasses, spec.dim)))
    super_of = rng.permutation(np.arange(spec.clusters) % spec.superclasses)
    offsets = spec.spread * _unit(rng.standard_normal((spec.clusters, spec.dim)))
    centres = _unit(supers[super_of] + offsets).astype(np.float32)
    bases = rng.standard_normal((spec.superclasses, spec.rank, spec.dim)).astype(np.float32)
    bases *= np.float32(spec.within / math.sqrt(spec.dim * spec.rank))
    bases = bases[super_of]  # (clusters, rank, dim): siblings vary in one shared subspace
    counts = class_counts(spec.rows, spec.clusters, spec.imbalance, rng)
    labels = rng.permutation(np.repeat(np.arange(spec.clusters), counts))
    out = np.empty((spec.rows, spec.dim), dtype=np.float32)
    noise = np.float32(spec.noise / math.sqrt(spec.dim))
    for start in range(0, spec.rows, chunk):
        block = labels[start : start + chunk]
        z = rng.standard_normal((block.size, spec.rank), dtype=np.float32)
        x = out[start : start + block.size]
        np.einsum("nr,nrd->nd", z, bases[block], out=x)
        x += centres[block]
        x += noise * rng.standard_normal(x.shape, dtype=np.float32)
        l2_normalize_rows(x)
    return out, labels.astype(np.int64)


def exact_neighbours(
    features: np.ndarray, queries: np.ndarray, k: int, chunk: int = 131072
) -> np.ndarray:
    """(len(queries), k) exact inner-product neighbours of rows `queries`, self excluded.

    The database is scanned in chunks of `chunk` rows by an IndexFlatIP each, and the
    per-chunk top-(k+1) merged in a faiss ResultHeap, so no (Q, N) matrix is formed.
    """
    xq = np.ascontiguousarray(features[queries])
    heap = faiss.ResultHeap(len(queries), k + 1, keep_max=True)
    for start in range(0, features.shape[0], chunk):
        block = features[start : start + chunk]
        flat = faiss.IndexFlatIP(features.shape[1])
        flat.add(block)
        scores, ids = flat.search(xq, min(k + 1, block.shape[0]))
        heap.add_result(scores, np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    return drop_self(heap.I, queries)


def make_view(features: np.ndarray, labels: np.ndarray) -> BenchmarkView:
    """An in-memory view whose train and val splits are both the generated rows."""
    split = StoreSplit(features, labels)
    store = FeatureStore(path=Path("<generated>"), train=split, val=split, fingerprint="scale")
    num_classes = int(labels.max()) + 1
    return BenchmarkView("scale", store, labels, labels, num_classes)
