"""FeatureStore: a directory of precomputed features, opened memory-mapped and validated.

Format (the user's data contract, docs/data.md):
    train.npy                        float16/float32, shape (N, D)
    val.npy (optional)               the same for a held-out split
    train_labels.npy, val_labels.npy integer, shape (N,), values >= 0 (optional: a store
                                     without them is unlabelled; labels for some splits
                                     and not others are refused)
    train_files.txt, val_files.txt   (optional) one image path per feature row
    classes.txt (optional)           one class id per line, line index = label
    meta.json (optional)             free-form: extractor, dim, dtype, how it was made
Features are never read whole: a store larger than RAM is scanned in chunks.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clusterbench.core.errors import StoreError
from clusterbench.core.fingerprint import fingerprint_files
from clusterbench.core.progress import progress

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
FEATURE_DTYPES = (np.float16, np.float32)
# Rows checked for NaN/inf per step: 64k x 1024 fp16 is 128 MB.
_SCAN_ROWS = 65536


@dataclass
class StoreSplit:
    """One split: memory-mapped features (N, D) and in-memory integer labels (N,), or None in
    an unlabelled store. An absent val.npy is a split of zero rows."""

    features: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


@dataclass
class FeatureStore:
    """A validated store directory; `fingerprint` keys every cache derived from it."""

    path: Path
    train: StoreSplit
    val: StoreSplit
    classes: list[str] | None = None
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def dim(self) -> int:
        return self.train.dim

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None

    @property
    def num_classes(self) -> int | None:
        """Classes named in classes.txt, else 1 + the largest label in either split; None for
        an unlabelled store without classes.txt."""
        if self.classes is not None:
            return len(self.classes)
        if not self.labelled:
            return None
        tops = [
            int(s.labels.max(initial=-1)) for s in (self.train, self.val) if s.labels is not None
        ]
        return max(tops) + 1

    def require_labels(self, what: str) -> None:
        """One line naming the missing file when `what` (a command, a benchmark) needs labels."""
        if not self.labelled:
            raise StoreError(
                f"{what} needs labels, but {self.path / 'train_labels.npy'} does not exist "
                "(an unlabelled store can be clustered: clusterbench run dataset=custom "
                f"dataset.path={self.path} method.num_clusters=K)"
            )

    def files_path(self, split: str) -> Path | None:
        """`<split>_files.txt` (one image path per row) when the store has it."""
        file = self.path / f"{split}_files.txt"
        return file if file.is_file() else None

    def split(self, name: str) -> StoreSplit:
        if name not in SPLITS:
            raise StoreError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        check_finite: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> FeatureStore:
        """Open and validate `path`; raise StoreError naming the file and the problem.

        The NaN/inf scan reads every feature (22 GB for ImageNet-21K); with `cache_dir` a
        passed scan is remembered by store fingerprint, so sweeps pay for it once.
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            raise StoreError(
                f"feature store {root} does not exist or is not a directory; expected a "
                "directory with train.npy (and val.npy, *_labels.npy when it has them)"
            )
        splits = {"train": _open_split(root, "train")}
        splits["val"] = (
            _open_split(root, "val")
            if (root / "val.npy").exists()
            else StoreSplit(
                np.empty((0, splits["train"].dim), splits["train"].features.dtype), None
            )
        )
        _check_labels_everywhere(root, splits)
        for name, split in splits.items():
            _check_files(root, name, len(split))
        if splits["val"].dim != splits["train"].dim:
            raise StoreError(
                f"{root}: train.npy has dimension {splits['train'].dim} but val.npy has "
                f"{splits['val'].dim}; both splits must come from the same extractor"
            )
        classes = _read_classes(root)
        if classes is not None:
            for name, split in splits.items():
                if split.labels is None:
                    continue
                top = int(split.labels.max(initial=-1))
                if top >= len(classes):
                    raise StoreError(
                        f"{root / f'{name}_labels.npy'}: label {top} is out of range for "
                        f"classes.txt, which lists {len(classes)} classes (labels must be "
                        f"< {len(classes)})"
                    )
        meta = _read_meta(root)
        fingerprint = fingerprint_files([root / f for f in _store_files(root)])
        marker = (
            None if cache_dir is None else Path(cache_dir).expanduser() / "finite" / fingerprint
        )
        if check_finite and not (marker is not None and marker.exists()):
            for name, split in splits.items():
                if len(split):
                    _check_finite(root / f"{name}.npy", split.features)
            if marker is not None:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
        return cls(
            path=root,
            train=splits["train"],
            val=splits["val"],
            classes=classes,
            meta=meta,
            fingerprint=fingerprint,
        )


def _store_files(root: Path) -> list[str]:
    """What the fingerprint covers: the same list as always for a labelled two-split store."""
    names = [f"{s}{suffix}" for s in SPLITS for suffix in (".npy", "_labels.npy")]
    return [n for n in names if (root / n).exists()] + [
        n for n in ("classes.txt",) if (root / n).exists()
    ]


def _check_labels_everywhere(root: Path, splits: dict[str, StoreSplit]) -> None:
    """Labels for every split or for none: a mixed store would be half graded."""
    present = [name for name, split in splits.items() if len(split) and split.labels is not None]
    absent = [name for name, split in splits.items() if len(split) and split.labels is None]
    if present and absent:
        raise StoreError(
            f"{root / f'{absent[0]}_labels.npy'} is missing while "
            f"{root / f'{present[0]}_labels.npy'} exists; a store has labels for every split "
            "or for none (delete the labels to cluster it unlabelled)"
        )


def _check_files(root: Path, name: str, rows: int) -> None:
    """`<split>_files.txt` must name one image per feature row (assignments carry them)."""
    file = root / f"{name}_files.txt"
    if not file.is_file():
        return
    lines, last = 0, b"\n"
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    lines += last != b"\n"  # a last line without its newline
    if lines != rows:
        raise StoreError(
            f"{file} lists {lines} paths but {name}.npy has {rows} rows; expected one path "
            "per feature row"
        )


def _load_npy(file: Path, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise StoreError(
            f"missing file {file}; a feature store needs it (see docs/data.md: The feature store)"
        )
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StoreError(f"{file} is not a readable .npy array ({exc})") from None


def _open_split(root: Path, name: str) -> StoreSplit:
    feat_file, label_file = root / f"{name}.npy", root / f"{name}_labels.npy"
    features = _load_npy(feat_file, mmap=True)
    if features.ndim != 2:
        raise StoreError(
            f"{feat_file}: expected a 2-D array (N samples x D dims), found shape {features.shape}"
        )
    if features.dtype not in FEATURE_DTYPES:
        raise StoreError(
            f"{feat_file}: expected float16 or float32 features, found {features.dtype}"
        )
    if features.shape[0] == 0:
        raise StoreError(f"{feat_file}: holds no samples (shape {features.shape})")
    if features.shape[1] == 0:
        raise StoreError(f"{feat_file}: rows have no dimensions (shape {features.shape})")
    if not label_file.exists():
        return StoreSplit(features=features, labels=None)
    labels = _load_npy(label_file, mmap=False)
    if labels.ndim != 1:
        raise StoreError(
            f"{label_file}: expected a 1-D array of N labels, found shape {labels.shape}"
        )
    if labels.shape[0] != features.shape[0]:
        raise StoreError(
            f"{label_file}: has {labels.shape[0]} labels but {feat_file.name} has "
            f"{features.shape[0]} rows; expected one label per feature row"
        )
    if labels.dtype.kind not in "iu":
        raise StoreError(
            f"{label_file}: expected integer labels (int64), found dtype {labels.dtype}"
        )
    if labels.size and int(labels.min()) < 0:
        bad = int((labels < 0).sum())
        raise StoreError(
            f"{label_file}: {bad} labels are negative (min {int(labels.min())}); expected "
            "class indices >= 0"
        )
    return StoreSplit(features=features, labels=labels.astype(np.int64, copy=False))


def _check_finite(file: Path, features: np.ndarray) -> None:
    """Rejects rows with NaN/inf, and rows whose float32 L2 norm overflows (|x| ~ 1e19 and up).

    Such rows are finite yet every cosine method (k-means, kNN, the heads' normalisations)
    would turn them into zero vectors; float16 rows cannot overflow, so only float32 is summed.
    """
    bad_rows = overflow_rows = zero_rows = 0
    n = features.shape[0]
    for start in progress(range(0, n, _SCAN_ROWS), f"checking {file.name} ({n:,} rows)"):
        chunk = np.asarray(features[start : start + _SCAN_ROWS])
        finite = np.isfinite(chunk).all(axis=1)
        bad_rows += int((~finite).sum())
        zero_rows += int((~chunk.any(axis=1)).sum())
        if chunk.dtype == np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                squares = np.einsum("ij,ij->i", chunk, chunk)
            overflow_rows += int((finite & ~np.isfinite(squares)).sum())
    if bad_rows:
        raise StoreError(
            f"{file}: {bad_rows} of {n} rows contain NaN or inf values; features must be finite"
        )
    if zero_rows == n:
        raise StoreError(f"{file}: all {n} rows are zero vectors; nothing can be clustered")
    if zero_rows:
        log.warning(
            "%s: %d of %d rows are zero vectors (no direction: cosine methods put them anywhere)",
            file,
            zero_rows,
            n,
        )
    if overflow_rows:
        raise StoreError(
            f"{file}: {overflow_rows} of {n} rows have an L2 norm beyond float32's range "
            "(values of ~1e19 or more); rescale the features (e.g. divide by their largest "
            "absolute value) before clustering"
        )


def _read_classes(root: Path) -> list[str] | None:
    file = root / "classes.txt"
    if not file.exists():
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StoreError(
            f"{file} is not UTF-8 text; expected one class id per line (e.g. n01440764)"
        ) from None
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise StoreError(f"{file} is empty; expected one class id per line")
    if len(set(classes)) != len(classes):
        raise StoreError(f"{file} lists a class id twice; expected unique ids, one per line")
    return classes


def _read_meta(root: Path) -> dict:
    file = root / "meta.json"
    if not file.exists():
        return {}
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{file}: expected a JSON object, found {type(meta).__name__}")
    return meta
