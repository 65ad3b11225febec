"""ImageNet-1K ReaL (Beyer et al. 2020; section 4.4, Table 4): multi-label validation sets.

ReaL file (`real.json`): a JSON list with one entry per ImageNet-1K validation image in
val-file order (ILSVRC2012_val_00000001 first), each a list of standard ImageNet-1K class
ids (sorted-wnid order), possibly empty. Images with an empty list are excluded. timm ships
the file (50000 lists, 3163 empty); `dataset.real` overrides it. The base store's val rows
follow the same val-file order, unless the store has a `val_files.txt` (one relative path per
val row, as `python -m clusterbench extract` writes): then each row is matched to its entry by
the file name `ILSVRC2012_val_XXXXXXXX`, so any val order or layout (class folders) works.

Evaluation (`evaluate_real`): the Hungarian mapping is estimated from the top-1 predictions
against one label drawn at random from each image's set S_L; all metrics are computed with
that mapping and label, the draw is repeated `repeats` times (50 in the paper) and the mean
is reported, with the standard deviation of each accuracy next to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from clusterbench.benchmarks.cache import ViewArrays, cached_view
from clusterbench.benchmarks.imagenet21k.rules import expand_label_sets
from clusterbench.benchmarks.imagenet21k.timm import timm_real_labels_path
from clusterbench.benchmarks.source import open_base
from clusterbench.core.errors import BenchmarkFileError
from clusterbench.data.view import BenchmarkView, LabelSets, SampledLabels

NUM_CLASSES = 1000
VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})")


def load_real(file: Path, num_val: int | None) -> LabelSets:
    """Per-image ReaL label sets (CSR) from a real.json file, validated against num_val
    (None: any length, the caller matches rows by file name)."""
    try:
        raw = json.loads(Path(file).read_text())
    except FileNotFoundError:
        raise BenchmarkFileError(f"ReaL labels file {file} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkFileError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(raw, list) or not all(isinstance(s, list) for s in raw):
        raise BenchmarkFileError(
            f"{file}: expected a JSON list with one list of class ids per validation image"
        )
    if num_val is not None and len(raw) != num_val:
        raise BenchmarkFileError(
            f"{file}: has {len(raw)} entries but the base store has {num_val} validation "
            "images; expected one entry per image, in val-file order"
        )
    sizes = np.fromiter((len(s) for s in raw), dtype=np.int64, count=len(raw))
    flat = [x for s in raw for x in s]
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
        raise BenchmarkFileError(f"{file}: class ids must be integers")
    indices = np.array(flat, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= NUM_CLASSES):
        raise BenchmarkFileError(
            f"{file}: class ids must be in 0..{NUM_CLASSES - 1}, found "
            f"{int(indices.min())}..{int(indices.max())}"
        )
    indptr = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    return LabelSets(indptr, indices)


def real_rows(val_files: Path, num_val: int, num_real: int) -> np.ndarray:
    """(num_val,) ReaL entry of each val row, from the ILSVRC2012_val_XXXXXXXX file names."""
    names = [line.strip() for line in Path(val_files).read_text().splitlines() if line.strip()]
    if len(names) != num_val:
        raise BenchmarkFileError(
            f"{val_files}: lists {len(names)} files but the base store has {num_val} "
            "validation rows; expected one relative path per val row"
        )
    rows = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        match = VAL_FILE.search(Path(name).name)
        if match is None:
            raise BenchmarkFileError(
                f"{val_files}:{i + 1}: {name} is not an ImageNet validation file name "
                "(ILSVRC2012_val_XXXXXXXX); ReaL labels need the original val files"
            )
        rows[i] = int(match.group(1)) - 1
    if rows.size and (rows.min() < 0 or rows.max() >= num_real):
        bad = int(rows.max() if rows.max() >= num_real else rows.min())
        raise BenchmarkFileError(
            f"{val_files}: ILSVRC2012_val_{bad + 1:08d} has no entry in the ReaL file "
            f"({num_real} entries)"
        )
    if np.unique(rows).size != rows.size:
        raise BenchmarkFileError(f"{val_files}: lists the same validation image twice")
    return rows


def restrict(sets: LabelSets, rows: np.ndarray) -> LabelSets:
    """The label sets of the given rows, in that order."""
    return expand_label_sets(sets.indptr, sets.indices, rows)


def in1k_real(
    real: str | None = None,
    repeats: int = 50,
    sample_seed: int = 0,
    name: str = "in1k_real",
    **base: Any,
) -> BenchmarkView:
    """ImageNet-1K train; val = the images with a non-empty ReaL set, S_L = that set.

    `evaluation = SampledLabels(repeats, sample_seed)` asks the run to evaluate against
    labels drawn from the sets (`evaluation.sampled`); `val_labels` keep the original labels.
    """
    src = open_base("in1k", name, **base)
    file = Path(real).expanduser() if real else timm_real_labels_path()
    val_files = None if src.synthetic else src.extra_file("val_files.txt")

    def build() -> ViewArrays:
        if val_files is None:
            sets = load_real(file, len(src.store.val))
        else:  # rows in any order: each finds its entry by file name
            everything = load_real(file, None)
            sets = restrict(everything, real_rows(val_files, len(src.store.val), len(everything)))
        keep = np.flatnonzero(np.diff(sets.indptr) > 0)
        train, val = src.labels
        names = list(src.family_classes)
        return ViewArrays(
            train, val[keep], len(names), names, val_index=keep, val_label_sets=restrict(sets, keep)
        )

    params = {"repeats": int(repeats), "sample_seed": int(sample_seed)}
    inputs = {"real": file, **({"val_files": val_files} if val_files is not None else {})}
    view = cached_view(name, src, "in1k_real", params, build, files=inputs)
    view.evaluation = SampledLabels(repeats=int(repeats), seed=int(sample_seed))
    return view
