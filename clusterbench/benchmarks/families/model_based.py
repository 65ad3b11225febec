"""Model-based ImageNet-21K subsets (section 4.3, Table 3): easy-to-classify classes.

CLIP-1K, DINOv2-1K and Sup-1K keep the 1000 classes with the highest per-class validation
accuracy of a linear probe on that model's features; Random-1K draws 1000 classes (seeded);
the union keeps the classes of the three top-1K subsets.

Per-class accuracy file (written by linear probing), one per model:
- `.npy`: float array of shape (10450,), entry c = accuracy of ImageNet-21K class c (the
  shipped tree's class order = timm's imagenet21k_miil_w21_synsets.txt), a fraction in
  [0, 1]; NaN = not measured (ranks last);
- `.json`: the same as a list of 10450 numbers (null = not measured), or an object
  {wnid: accuracy} (classes not listed are not measured).
Ties go to the lower class id. Without `dataset.accuracy`, the file
`<base store>/probe_accuracy/<model>.npy` (or .json) is used, else the copy linear probing
wrote under `<cache_dir>/probe_accuracy/<store fingerprint>/` for a read-only store; the
synthetic store ships one. A sidecar `<model>.tree.json` (written by linear probing) names the
tree class order the file is indexed by; a file written for another tree is rejected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import subset_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.benchmarks.source import BaseStore, open_base
from clusterbench.core.errors import BenchmarkFileError, ConfigError
from clusterbench.core.fingerprint import digest
from clusterbench.data.view import BenchmarkView


def accuracy_file(src: BaseStore, model: str, path: str | None) -> Path:
    """The per-class accuracy file of `model`: the given path, else the base store's own."""
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise BenchmarkFileError(f"per-class accuracy file {file} does not exist")
        return file
    for suffix in (".npy", ".json"):
        if (file := src.extra_file("probe_accuracy", f"{model}{suffix}")) is not None:
            return file
    if (file := fallback_dir(src.cache_dir, src.store.fingerprint) / f"{model}.npy").is_file():
        return file
    raise ConfigError(
        f"no per-class accuracies for model {model!r}: set dataset.accuracy (model-based "
        f"subsets: dataset.accuracy.{model}) to a .npy/.json file of linear-probe accuracies "
        f"per ImageNet-21K class, or place it at {src.store.path}/probe_accuracy/{model}.npy"
    )


def fallback_dir(cache_dir: str | Path, store_fingerprint: str) -> Path:
    """Where linear probing puts the accuracy files of a store it cannot write to."""
    return Path(cache_dir).expanduser() / "probe_accuracy" / store_fingerprint


def classes_digest(tree: Tree) -> str:
    """Names a tree's class order: what a per-class accuracy file is indexed by."""
    return digest(list(tree.class_wnids))


def tree_sidecar(file: Path) -> Path:
    return file.with_name(f"{file.stem}.tree.json")


def check_tree(file: Path, tree: Tree) -> None:
    """Reject a file whose sidecar names another tree's class order (no sidecar: unchecked)."""
    side = tree_sidecar(file)
    if not side.is_file():
        return
    try:
        info = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkFileError(f"{side} is not valid JSON ({exc})") from None
    info = info if isinstance(info, dict) else {}
    if info.get("classes_digest") != classes_digest(tree):
        raise BenchmarkFileError(
            f"{file} was written for another tree ({info.get('num_classes', '?')} classes, "
            f"class order {info.get('classes_digest', '?')}), not this one ({tree.num_classes} "
            f"classes, class order {classes_digest(tree)}); re-run linear probing on this tree"
        )


def load_accuracy(file: Path, tree: Tree) -> np.ndarray:
    """(C,) float64 per-class accuracies from a .npy or .json file; NaN = not measured."""
    c = tree.num_classes
    check_tree(file, tree)
    if file.suffix == ".npy":
        try:
            raw = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BenchmarkFileError(f"{file} is not a readable .npy array ({exc})") from None
        if raw.dtype.kind not in "fiu":
            raise BenchmarkFileError(f"{file}: expected float accuracies, found dtype {raw.dtype}")
        acc = raw.astype(np.float64)
    elif file.suffix == ".json":
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BenchmarkFileError(f"{file} is not valid JSON ({exc})") from None
        acc = _json_accuracies(file, raw, tree)
    else:
        raise BenchmarkFileError(f"{file}: expected a .npy or .json per-class accuracy file")
    if acc.shape != (c,):
        raise BenchmarkFileError(
            f"{file}: expected one accuracy per ImageNet-21K class, shape ({c},), found "
            f"shape {acc.shape}"
        )
    measured = acc[~np.isnan(acc)]
    if measured.size and not ((measured >= 0) & (measured <= 1)).all():
        raise BenchmarkFileError(
            f"{file}: accuracies must be fractions in [0, 1] (or NaN), found values in "
            f"[{measured.min():g}, {measured.max():g}]"
        )
    return acc


def _json_accuracies(file: Path, raw: object, tree: Tree) -> np.ndarray:
    def number(v: object, where: str) -> float:
        if v is None:
            return np.nan
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BenchmarkFileError(f"{file}: {where} is {v!r}, expected a number or null")
        return float(v)

    if isinstance(raw, list):
        return np.array([number(v, f"entry {i}") for i, v in enumerate(raw)], dtype=np.float64)
    if isinstance(raw, dict):
        acc = np.full(tree.num_classes, np.nan)
        classes = set(tree.class_wnids)
        unknown = [w for w in raw if w not in classes]
        if unknown:
            raise BenchmarkFileError(
                f"{file}: {len(unknown)} keys are not ImageNet-21K classes "
                f"(e.g. {', '.join(map(str, unknown[:3]))}); expected class wnids"
            )
        for w, v in raw.items():
            acc[tree.node(w)] = number(v, f"entry {w!r}")
        return acc
    raise BenchmarkFileError(
        f"{file}: expected a JSON list of {tree.num_classes} accuracies or an object "
        f"{{wnid: accuracy}}, found {type(raw).__name__}"
    )


def _top_k_mask(src: BaseStore, tree: Tree, model: str, path: str | None, k: int) -> tuple:
    file = accuracy_file(src, model, path)
    acc = load_accuracy(file, tree)
    if not 0 < k <= tree.num_classes:
        raise ConfigError(f"dataset.k must be in 1..{tree.num_classes}, got {k}")
    return rules.top_k_classes(acc, k), file


def top_k(
    model: str, accuracy: str | None = None, k: int = 1000, name: str = "top_k", **base: Any
) -> BenchmarkView:
    """The `k` classes with the highest per-class probe accuracy of `model`."""
    src = open_base("in21k", name, **base)
    tree = load_tree()
    mask, file = _top_k_mask(src, tree, model, accuracy, int(k))
    return cached_view(
        name,
        src,
        "top_k",
        {"model": model, "k": int(k)},
        lambda: subset_view(tree, *src.labels, mask),
        files={model: file},
    )


def union(
    models: list[str],
    accuracy: dict[str, str | None] | None = None,
    k: int = 1000,
    name: str = "union",
    **base: Any,
) -> BenchmarkView:
    """The union of the top-`k` subsets of `models` (Table 3: 1331 classes for the three)."""
    src = open_base("in21k", name, **base)
    tree = load_tree()
    accuracy = dict(accuracy or {})
    unknown = set(accuracy) - set(models)
    if unknown:
        raise ConfigError(f"dataset.accuracy names {sorted(unknown)}, not in models={models}")
    mask = np.zeros(tree.num_classes, dtype=bool)
    files = {}
    for model in models:
        m, files[model] = _top_k_mask(src, tree, model, accuracy.get(model), int(k))
        mask |= m
    params = {"models": list(models), "k": int(k)}
    return cached_view(
        name, src, "union", params, lambda: subset_view(tree, *src.labels, mask), files=files
    )


def random_subset(
    k: int = 1000, seed: int = 0, name: str = "random_1k", **base: Any
) -> BenchmarkView:
    """`k` classes drawn uniformly without replacement (fixed by `seed`)."""
    src = open_base("in21k", name, **base)
    tree = load_tree()
    if not 0 < int(k) <= tree.num_classes:
        raise ConfigError(f"dataset.k must be in 1..{tree.num_classes}, got {k}")
    mask = rules.random_classes(tree.num_classes, int(k), int(seed))
    params = {"k": int(k), "seed": int(seed)}
    return cached_view(name, src, "random", params, lambda: subset_view(tree, *src.labels, mask))
