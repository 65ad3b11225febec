"""Relabelled ImageNet-21K benchmarks (section 4.2, Table 2): leaf HZR and p-HZR.

Hierarchical zero-shot label refining writes a new label for every sample; this module only
reads them. Relabel format, a directory:
    train_labels.npy   integer (N_train,): new class of each train row of the base store
    val_labels.npy     integer (N_val,):   the same for the val rows
    meta.json          provenance; `store_fingerprint`: the base store it was made for
Rows follow the base store's rows. Values are ImageNet-21K class ids in the shipped tree's
order (timm's imagenet21k_miil_w21_synsets.txt line numbers), not store labels; -1 excludes
the sample.

The view keeps the classes that have at least one train and one validation sample after
relabelling and drops the rest with their samples (the paper's p-HZR loses 37 classes and
484 train samples that way); kept classes are renumbered in class-id order and S_L is the
new class's chain within the view. Without `dataset.relabel`, the directory
`<base store>/relabel/<kind>/` is used; the synthetic store ships one per kind.

A relabelling only means something on the store it was made for: one made for store A and
applied to a store B of the same shape passes every shape check and scores nonsense (k-means
ACC 12.5 % instead of 93.2 %). So meta.json's `store_fingerprint` (what `hzr` and the synthetic
generator write: `FeatureStore.fingerprint` of the base store) must equal the fingerprint of
the base store it is applied to, else one error line names both. The fingerprint covers file
names, sizes, modification times and the first and last MiB, so a store copied without its
modification times needs hzr run again. A directory without a fingerprint (written by hand or
by a script of one's own) is accepted with one warning per directory and store, per process:
the format has always allowed it and hand-made relabellings are legitimate, while hzr has
always recorded the fingerprint, so every directory it wrote is checked (one written before
the fingerprint recipe last changed no longer matches and needs hzr again).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import subset_view
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.source import BaseStore, open_base
from clusterbench.core.errors import BenchmarkFileError, ConfigError
from clusterbench.data.view import BenchmarkView

log = logging.getLogger(__name__)

KINDS = ("leaf_hzr", "p_hzr")
_warned: set[tuple[str, str]] = set()  # (directory, store fingerprint) warned about


def relabel_dir(src: BaseStore, kind: str, path: str | None) -> Path:
    """The relabel directory: the given path, else `<base store>/relabel/<kind>`."""
    if path:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise BenchmarkFileError(
                f"relabel directory {root} does not exist; expected a directory with "
                "train_labels.npy and val_labels.npy (see clusterbench.benchmarks.families.relabel)"
            )
        return root
    if (root := src.extra_file("relabel", kind)) is not None:
        return root
    raise ConfigError(
        f"no relabelling for {kind}: set dataset.relabel to a directory with "
        "train_labels.npy and val_labels.npy (new ImageNet-21K class id per sample, -1 = "
        f"excluded), or place it at {src.store.path}/relabel/{kind}/"
    )


def check_made_for(root: Path, src: BaseStore) -> None:
    """The relabel directory must have been made for this base store (module docstring)."""
    file = root / "meta.json"
    meta: Any = {}
    if file.is_file():
        try:
            meta = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchmarkFileError(f"{file} is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise BenchmarkFileError(f"{file}: expected a JSON object, found {type(meta).__name__}")
    made_for, here = meta.get("store_fingerprint"), src.store.fingerprint
    if made_for is None:
        if (str(root), here) not in _warned:
            _warned.add((str(root), here))
            log.warning(
                "relabel directory %s records no store fingerprint, so nothing checks that it "
                "was made for %s; rerun hzr on this store, or, if it certainly was, add "
                '"store_fingerprint": "%s" to %s',
                root,
                src.store.path,
                here,
                file,
            )
        return
    if str(made_for) != here:
        raise BenchmarkFileError(
            f"relabel directory {root} was made for the store {meta.get('base_store', '?')} "
            f"(fingerprint {made_for}), not for {src.store.path} (fingerprint {here}); its "
            "labels would land on other samples: rerun hzr on this store (a store copied "
            "without its modification times has a new fingerprint too)"
        )


def load_relabel(root: Path, src: BaseStore, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) int64 new class ids per base-store row, validated; -1 = excluded."""
    out = []
    for split in ("train", "val"):
        file = root / f"{split}_labels.npy"
        if not file.is_file():
            raise BenchmarkFileError(f"missing file {file}; a relabel directory needs it")
        try:
            labels = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BenchmarkFileError(f"{file} is not a readable .npy array ({exc})") from None
        n = len(src.store.split(split))
        if labels.dtype.kind not in "iu" or labels.shape != (n,):
            raise BenchmarkFileError(
                f"{file}: expected integer labels of shape ({n},), one per {split} row of "
                f"{src.store.path}, found {labels.dtype} {labels.shape}"
            )
        labels = labels.astype(np.int64, copy=False)
        bad = (labels < -1) | (labels >= num_classes)
        if bad.any():
            raise BenchmarkFileError(
                f"{file}: {int(bad.sum())} labels are outside -1..{num_classes - 1} (e.g. "
                f"{int(labels[bad][0])}); expected ImageNet-21K class ids, -1 = excluded"
            )
        out.append(labels)
    return out[0], out[1]


def relabel(
    kind: str, relabel: str | None = None, name: str = "relabel", **base: Any
) -> BenchmarkView:
    """The base store under the relabelling `kind` (leaf_hzr or p_hzr)."""
    if kind not in KINDS:
        raise ConfigError(f"dataset.kind={kind!r}: expected one of {KINDS}")
    src = open_base("in21k", name, **base)
    tree = load_tree()
    root = relabel_dir(src, kind, relabel)
    check_made_for(root, src)  # also when the view is cached: cheap, and the store may differ

    def build():
        train, val = load_relabel(root, src, tree.num_classes)
        c = tree.num_classes
        present = (np.bincount(train[train >= 0], minlength=c) > 0) & (
            np.bincount(val[val >= 0], minlength=c) > 0
        )
        return subset_view(tree, train, val, present)

    return cached_view(name, src, "relabel", {"relabel": kind}, build, files={kind: root})
