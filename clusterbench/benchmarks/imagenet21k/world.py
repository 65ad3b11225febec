"""A generated stand-in for ImageNet-21K features: all 10450 classes on the real tree.

Every ImageNet-21K benchmark (coarse, leaf, frequency bands, model-based subsets, HZR
relabels) must build and run without ImageNet, so this world follows the shipped tree:
- every tree node (classes and the non-class synsets between them) has a mean: its parent's
  mean plus Gaussian noise that shrinks with depth, so coarse labels (ancestors) group
  nearby classes and fine-grained siblings are confusable, as in real features;
- a long-tailed train histogram (exponential profile, max/min ratio about `imbalance`) and a
  balanced validation split (`val_per_class`, like ImageNet-21K-P's 50 per class);
- an image of a non-leaf class often shows one of its descendants (a "dog" photo shows a
  husky): with probability 1 - `keep_prob` its hidden label is a class drawn uniformly below
  the annotated one, and the features follow the hidden label. The hidden label is what an
  ideal p-HZR relabelling recovers; a leaf drawn below it is what leaf HZR recovers. Both are
  written as relabel files (format: `clusterbench.benchmarks.families.relabel`) whose
  meta.json records the store's fingerprint, as hzr's do, so the benchmarks check them too;
- per-class "linear-probe accuracies" for the model-based subsets: the Gaussian two-class
  accuracy against the nearest other class mean, plus model-specific noise (format:
  `clusterbench.benchmarks.families.model_based`).
Features are written chunk by chunk into memory-mapped .npy files, so the scale runs from
~50k samples up to ImageNet-21K's 11M without holding the matrix in memory.

`materialize_in1k` writes the ImageNet-1K classes of the same world (fallback base of the
in1k benchmarks): balanced train, and a 50000-image val split in ReaL order whose images mix
the means of their ReaL label sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.timm import in1k_wnids, timm_real_labels_path
from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.core.atomic import write_dir_atomically, write_json_atomic
from clusterbench.core.errors import ConfigError
from clusterbench.core.fingerprint import digest
from clusterbench.core.progress import progress
from clusterbench.data.store import FeatureStore
from clusterbench.data.store_writer import write_store_files

FORMAT_VERSION = 1
# Rows generated per step; part of the output definition (each chunk has its own RNG stream).
CHUNK_ROWS = 1 << 16
PROBE_MODELS = ("clip", "dinov2", "sup")
# Std of the per-model deviation of simulated probe accuracies: the three top-1K subsets
# overlap a lot but not fully, as in Table 3.
PROBE_NOISE = 0.03
RELABELS = ("leaf_hzr", "p_hzr")


@dataclass(frozen=True)
class WorldSpec:
    """The shared geometry: node means along the tree and sample noise."""

    dim: int = 64
    branch_scale: float = 1.0  # per-dimension std of a depth-1 synset around the root
    branch_decay: float = 0.8  # each level deeper, offsets shrink by this factor
    noise: float = 0.1  # per-dimension std of a sample around its class mean
    dtype: str = "float16"
    seed: int = 0

    def validate(self) -> None:
        if self.dim < 2:
            raise ConfigError(f"dataset.synthetic.dim must be >= 2, got {self.dim}")
        if self.branch_scale <= 0 or not 0 < self.branch_decay <= 1:
            raise ConfigError(
                "dataset.synthetic.branch_scale must be > 0 and branch_decay in (0, 1], got "
                f"{self.branch_scale} and {self.branch_decay}"
            )
        if self.noise < 0:
            raise ConfigError(f"dataset.synthetic.noise must be >= 0, got {self.noise}")
        if self.dtype not in ("float16", "float32"):
            raise ConfigError(
                f"dataset.synthetic.dtype must be float16 or float32, got {self.dtype!r}"
            )

    @property
    def key(self) -> str:
        return digest({"v": FORMAT_VERSION, "kind": type(self).__name__, **asdict(self)}, 12)


@dataclass(frozen=True)
class SyntheticIn21kSpec(WorldSpec):
    """Scale knobs: `num_train` from ~50k (default, every class present) up to 11M."""

    num_train: int = 52250
    val_per_class: int = 1
    imbalance: float = 10.0
    keep_prob: float = 0.5

    def validate(self, num_classes: int = 10450) -> None:
        super().validate()
        if self.num_train < num_classes:
            raise ConfigError(
                f"dataset.synthetic.num_train={self.num_train} is smaller than the "
                f"{num_classes} ImageNet-21K classes; every class needs a training sample"
            )
        if self.val_per_class < 1:
            raise ConfigError(
                f"dataset.synthetic.val_per_class must be >= 1, got {self.val_per_class}"
            )
        if self.imbalance < 1:
            raise ConfigError(
                f"dataset.synthetic.imbalance is a max/min ratio >= 1, got {self.imbalance}"
            )
        if not 0 <= self.keep_prob <= 1:
            raise ConfigError(
                f"dataset.synthetic.keep_prob must be in [0, 1], got {self.keep_prob}"
            )


@dataclass(frozen=True)
class SyntheticIn1kSpec(WorldSpec):
    """ImageNet-1K classes of the same world: `train_per_class` train images per class."""

    train_per_class: int = 20

    def validate(self) -> None:
        super().validate()
        if self.train_per_class < 1:
            raise ConfigError(
                f"dataset.synthetic.train_per_class must be >= 1, got {self.train_per_class}"
            )


def make_spec(cls: type[WorldSpec], params: dict) -> WorldSpec:
    """Spec from config params, with a clear error for unknown keys."""
    unknown = set(params) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"unknown dataset.synthetic parameter(s) {sorted(unknown)}; expected some of "
            f"{sorted(cls.__dataclass_fields__)}"
        )
    defaults = cls()
    typed = {}
    for key, value in params.items():
        # Cast to the defaults' types: `imbalance: 10` and `10.0` must name the same store.
        try:
            typed[key] = type(getattr(defaults, key))(value)
        except (TypeError, ValueError):
            raise ConfigError(f"dataset.synthetic.{key}={value!r} is not a valid value") from None
    return cls(**typed)


def _rng(spec: WorldSpec, *stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *stream])


# --- the world --------------------------------------------------------------------------------


def node_means(tree: Tree, spec: WorldSpec) -> np.ndarray:
    """(num_nodes, dim) float64: roots at 0, each node = parent + N(0, scale * decay^(depth-1))."""
    depth = tree.node_depth
    scale = np.where(depth > 0, spec.branch_scale * spec.branch_decay ** (depth - 1.0), 0.0)
    means = _rng(spec, 0).standard_normal((tree.num_nodes, spec.dim)) * scale[:, None]
    for level in range(1, int(depth.max()) + 1):  # parents are final before their children
        nodes = np.flatnonzero(depth == level)
        means[nodes] += means[tree.parent[nodes]]
    return means


def long_tail_counts(total: int, num_classes: int, imbalance: float, rng) -> np.ndarray:
    """(C,) counts >= 1 summing to `total`, exponential profile, in random class order."""
    profile = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    share = (total - num_classes) * profile / profile.sum()
    counts = 1 + np.floor(share).astype(np.int64)
    remainder = total - int(counts.sum())
    counts[np.argsort(np.floor(share) - share, kind="stable")[:remainder]] += 1
    return counts[rng.permutation(num_classes)]


def _draw(ptr: np.ndarray, idx: np.ndarray, rows: np.ndarray, rng) -> np.ndarray:
    """One member drawn uniformly from each CSR row `rows` (rows must be non-empty)."""
    size = np.diff(ptr)[rows]
    return idx[ptr[rows] + np.floor(rng.random(rows.size) * size).astype(np.int64)]


def hidden_labels(tree: Tree, labels: np.ndarray, keep_prob: float, rng) -> np.ndarray:
    """What each image shows: its class, or (prob 1 - keep_prob) a class drawn below it."""
    ptr, idx = tree.descendants()
    # Strict descendants: the same rows without the class itself.
    owner = np.repeat(np.arange(tree.num_classes), np.diff(ptr))
    strict = idx != owner
    sptr = np.zeros_like(ptr)
    np.cumsum(np.bincount(owner[strict], minlength=tree.num_classes), out=sptr[1:])
    sidx = idx[strict]
    move = (np.diff(sptr)[labels] > 0) & (rng.random(labels.size) >= keep_prob)
    out = labels.copy()
    out[move] = _draw(sptr, sidx, labels[move], rng)
    return out


def leaf_below(tree: Tree, labels: np.ndarray, rng) -> np.ndarray:
    """A leaf class drawn uniformly below each label (a leaf maps to itself)."""
    ptr, idx = tree.descendants(rules.imagenet21k_leaf_classes(tree))
    return _draw(ptr, idx, labels, rng)


def probe_accuracies(means: np.ndarray, noise: float, rng, chunk: int = 1024) -> np.ndarray:
    """(C,) simulated probe accuracy: Phi(d / 2 noise) for the distance d to the nearest other
    class mean (the Bayes accuracy of two isotropic Gaussians), plus per-model noise."""
    m = means.astype(np.float32)
    sq = (m * m).sum(1)
    nearest = np.empty(m.shape[0])
    for start in range(0, m.shape[0], chunk):
        block = m[start : start + chunk]
        d2 = sq[start : start + chunk, None] + sq[None, :] - 2 * block @ m.T
        d2[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = np.inf
        nearest[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    base = ndtr(nearest / (2 * max(noise, 1e-6)))
    return np.clip(base + PROBE_NOISE * rng.standard_normal(base.size), 0.0, 1.0)


# --- writing ----------------------------------------------------------------------------------


def _write_features(
    file: Path, centres: Callable[[slice], np.ndarray], n: int, spec: WorldSpec, split: int
) -> None:
    """(n, dim) = centres(rows) + noise, chunk by chunk into a memory-mapped .npy file."""
    out = np.lib.format.open_memmap(file, mode="w+", dtype=spec.dtype, shape=(n, spec.dim))
    starts = range(0, n, CHUNK_ROWS)
    for i, start in enumerate(progress(starts, f"writing {file.name} ({n:,} rows)")):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        x = centres(rows)
        x += spec.noise * _rng(spec, 100, split, i).standard_normal(x.shape)
        out[rows] = x
    out.flush()
    del out


def _meta(spec: WorldSpec, **extra) -> dict:
    made = {"extractor": "synthetic", "dim": spec.dim, "dtype": spec.dtype}
    return {**made, "made_by": __name__, "spec": asdict(spec), **extra}


def write_relabel_meta(store_dir: Path, base_store: Path) -> None:
    """meta.json of each shipped relabel directory, with the fingerprint of the store files in
    `store_dir` (written last: the fingerprint covers them; a rename keeps it) and the path
    `base_store` the store has (or will have, once renamed into place)."""
    fingerprint = FeatureStore.open(store_dir, check_finite=False).fingerprint
    shows = {"p_hzr": "the class each image shows", "leaf_hzr": "a leaf class below it"}
    for name in RELABELS:
        meta = {
            "made_by": __name__,
            "kind": name,
            "base_store": str(base_store),
            "store_fingerprint": fingerprint,
            "labels": f"ideal: {shows[name]}",
        }
        write_json_atomic(store_dir / "relabel" / name / "meta.json", meta)


def materialize_in21k(spec: SyntheticIn21kSpec, cache_dir: str | os.PathLike) -> Path:
    """Write the synthetic ImageNet-21K store for `spec` under cache_dir once; return its path."""
    tree = load_tree()
    spec.validate(tree.num_classes)
    root = Path(cache_dir).expanduser() / "synthetic_in21k" / spec.key

    def write(tmp: Path) -> None:
        c = tree.num_classes
        means = node_means(tree, spec)
        counts = long_tail_counts(spec.num_train, c, spec.imbalance, _rng(spec, 1))
        splits = {
            "train": np.repeat(np.arange(c), counts)[_rng(spec, 2).permutation(spec.num_train)],
            "val": np.tile(np.arange(c), spec.val_per_class),
        }
        splits["val"] = splits["val"][_rng(spec, 3).permutation(splits["val"].size)]
        for s, (split, labels) in enumerate(splits.items()):
            hidden = hidden_labels(tree, labels, spec.keep_prob, _rng(spec, 4, s))
            leaf = leaf_below(tree, hidden, _rng(spec, 5, s))
            np.save(tmp / f"{split}_labels.npy", labels)
            for name, relabel in (("p_hzr", hidden), ("leaf_hzr", leaf)):
                (tmp / "relabel" / name).mkdir(parents=True, exist_ok=True)
                np.save(tmp / "relabel" / name / f"{split}_labels.npy", relabel)
            _write_features(
                tmp / f"{split}.npy", lambda r, h=hidden: means[h[r]], labels.size, spec, s
            )
        (tmp / "probe_accuracy").mkdir()
        for m, model in enumerate(PROBE_MODELS):
            acc = probe_accuracies(means[:c], spec.noise, _rng(spec, 6, m))
            np.save(tmp / "probe_accuracy" / f"{model}.npy", acc)
        write_store_files(tmp, classes=tree.class_wnids, meta=_meta(spec, source="in21k"))
        write_relabel_meta(tmp, root)

    write_dir_atomically(root, write)
    if not all((root / "relabel" / name / "meta.json").is_file() for name in RELABELS):
        # A store generated before relabel directories had meta.json; in a read-only cache
        # they stay without, and the benchmarks warn that they cannot check them.
        try:
            write_relabel_meta(root, root)
        except OSError:
            pass
    return root


def materialize_in1k(spec: SyntheticIn1kSpec, cache_dir: str | os.PathLike) -> Path:
    """Write the synthetic ImageNet-1K store for `spec` under cache_dir once; return its path.

    Classes are the ImageNet-1K wnids in standard order (means from the in21k world; the few
    wnids outside the tree get a fresh depth-1 mean). Val follows timm's ReaL file: image i
    mixes the means of its ReaL set, its single label is one member drawn from the set (a
    random class when the set is empty).
    """
    spec.validate()
    tree = load_tree()
    root = Path(cache_dir).expanduser() / "synthetic_in1k" / spec.key

    def write(tmp: Path) -> None:
        wnids = in1k_wnids()
        world = node_means(tree, spec)
        fresh = _rng(spec, 7).standard_normal((len(wnids), spec.dim)) * spec.branch_scale
        node = {w: i for i, w in enumerate(tree.wnids)}
        means = np.stack([world[node[w]] if w in node else fresh[i] for i, w in enumerate(wnids)])
        c = len(wnids)
        train = np.repeat(np.arange(c), spec.train_per_class)
        train = train[_rng(spec, 2).permutation(train.size)]
        real = json.loads(timm_real_labels_path().read_text())
        size = np.array([len(s) for s in real], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(size)])
        flat = np.fromiter((x for s in real for x in s), dtype=np.int64, count=int(ptr[-1]))
        rng = _rng(spec, 3)
        val = rng.integers(0, c, len(real))
        has = np.flatnonzero(size > 0)
        val[has] = _draw(ptr, flat, has, rng)
        # Mean of each image's set (its own label when empty), via per-image sums.
        owner = np.repeat(np.arange(len(real)), size)
        mix = np.zeros((len(real), spec.dim))
        np.add.at(mix, owner, means[flat])
        mix[size == 0] = means[val[size == 0]]
        mix[has] /= size[has, None]
        np.save(tmp / "train_labels.npy", train)
        np.save(tmp / "val_labels.npy", val)
        _write_features(tmp / "train.npy", lambda r: means[train[r]], train.size, spec, 0)
        _write_features(tmp / "val.npy", lambda r: mix[r].copy(), val.size, spec, 1)
        write_store_files(tmp, classes=wnids, meta=_meta(spec, source="in1k"))

    return write_dir_atomically(root, write)
