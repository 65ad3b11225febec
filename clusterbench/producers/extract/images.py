"""Image listings (ImageFolder or file-list CSVs) for extraction (decoding: `decode.py`).

Layouts (`images.layout`), paths relative to `images.root`:
    imagefolder  <root>/<train>/<class>/**/<image>, same for <val>; class = folder name (wnid)
    filelist     <root>/<train>.csv with rows `path,label` (header optional), same for val;
                 paths relative to the root (or absolute), label = class name; rows of
                 `path` alone (every row of the file) make an unlabelled store
    flat         <root>/<train>/**/<image>, no classes: an unlabelled store; <root>/<val> is
                 optional (no val split without it)
Rows are sorted by path, so the order never depends on the file system. Files whose extension
is not an image's are ignored; classes with no image are left out (with a warning); val classes
unknown to train are an error. Directory links inside a class folder are followed, but every
real directory is listed at most once: a link back to an ancestor (a loop) or a second link to
a folder already listed is left out with a warning. A class or file name with a line break
(newline, carriage return, ...) or that is not UTF-8 is refused, naming the path: classes.txt
and *_files.txt hold one name a line.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from clusterbench.core.errors import ConfigError, ExtractionError

LAYOUTS = ("imagefolder", "filelist", "flat")
UNLABELLED = ""  # the label of every image of an unlabelled listing
SPLITS = ("train", "val")
IMAGE_EXTENSIONS = tuple(sorted(set(IMG_EXTENSIONS) | {".gif", ".jfif"}))
_SHOWN = 5


class PathTable:
    """Many relative paths in one byte buffer: DataLoader workers share it without the
    per-string reference counts that copy a Python list into every worker."""

    def __init__(self, paths: list[str]) -> None:
        encoded = [p.encode() for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, stop = self._offsets[index], self._offsets[index + 1]
        return self._data[start:stop].tobytes().decode()

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def digest(self) -> str:
        h = hashlib.sha1(self._offsets.tobytes())
        h.update(self._data.tobytes())
        return h.hexdigest()


@dataclass
class SplitListing:
    """One split: relative paths (sorted) and their class indices."""

    name: str
    files: PathTable
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class Listing:
    """Both splits of an image collection and the class list they index."""

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, SplitListing]
    ignored: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether the images have classes (a flat folder, or a file list of paths alone,
        has none: the store gets no labels and no classes.txt)."""
        return bool(self.classes)

    def digest(self) -> str:
        """Fingerprint of what would be extracted: paths, labels and classes."""
        h = hashlib.sha1("\n".join(self.classes).encode())
        for name in SPLITS:
            split = self.splits[name]
            h.update(split.files.digest().encode())
            h.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str | os.PathLike, layout: str, train: str, val: str) -> Listing:
    """List both splits of `root` in `layout` (see the module docstring)."""
    root = Path(root).expanduser().resolve()
    if layout not in LAYOUTS:
        raise ConfigError(f"images.layout={layout!r}; expected one of {LAYOUTS}")
    if not root.is_dir():
        raise ExtractionError(f"images.root={root} is not a directory")
    warnings: list[str] = []
    ignored: dict[str, int] = {}
    raw: dict[str, list[tuple[str, str]]] = {}
    empty: dict[str, list[str]] = {}
    for split, value in (("train", train), ("val", val)):
        if layout == "flat":
            if split == "val" and not (root / str(value)).is_dir():
                raw[split], ignored[split], empty[split] = [], 0, []
                continue
            pairs, skipped, repeated = _scan_flat(root, str(value), split)
            empty[split] = []
            if repeated:
                warnings.append(
                    f"images.{split}: {len(repeated)} directory links lead to a folder already "
                    f"listed and were not followed again: {_listing(repeated)}"
                )
        elif layout == "imagefolder":
            pairs, skipped, empty[split], loose, repeated = _scan_folder(root, str(value), split)
            if loose:
                warnings.append(
                    f"{loose} files directly in {root / str(value)} are not in a class folder; "
                    "ignored"
                )
            if repeated:
                warnings.append(
                    f"images.{split}: {len(repeated)} directory links lead to a folder already "
                    f"listed (a loop, or a second link to it) and were not followed again: "
                    f"{_listing(repeated)}"
                )
        else:
            pairs, skipped = _read_filelist(root, str(value), split)
            empty[split] = []
        ignored[split] = skipped
        if not pairs:
            raise ExtractionError(f"images.{split}: no images found under {root / str(value)}")
        raw[split] = sorted(pairs)
    if empty["train"]:
        warnings.append(
            f"{len(empty['train'])} train class folders hold no image and are left out of "
            f"classes.txt: {_listing(empty['train'])}"
        )
    labels_seen = {label for pairs in raw.values() for _, label in pairs}
    if UNLABELLED in labels_seen and len(labels_seen) > 1:
        raise ExtractionError(
            "some file-list rows have a label and others do not; label every row (`path,label`) "
            "or none (`path`): a store has labels for every image or for none"
        )
    classes = sorted({label for _, label in raw["train"]} - {UNLABELLED})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for _, label in raw["val"]} - set(index) - {UNLABELLED})
    if unknown:
        count = sum(1 for _, label in raw["val"] if label not in index)
        raise ExtractionError(
            f"{len(unknown)} val classes have no train images ({count} val images): "
            f"{_listing(unknown)}; every val class must also be a train class"
        )
    splits = {}
    for split, pairs in raw.items():
        duplicates = [a for (a, _), (b, _) in zip(pairs, pairs[1:], strict=False) if a == b]
        if duplicates:
            raise ExtractionError(
                f"images.{split} lists {len(duplicates)} files twice: {_listing(duplicates)}"
            )
        labels = np.fromiter(
            (index.get(label, -1) for _, label in pairs), dtype=np.int64, count=len(pairs)
        )
        splits[split] = SplitListing(split, PathTable([p for p, _ in pairs]), labels)
    return Listing(root, layout, classes, splits, ignored, warnings)


def _scan_folder(
    root: Path, value: str, split: str
) -> tuple[list[tuple[str, str]], int, list[str], int, list[str]]:
    """(path, class) pairs under root/value/<class>/, non-image count, empty classes, loose
    files, and the directory links left out because they lead to a folder already listed.

    Directory links are followed, each real directory at most once: a link back to an
    ancestor (a loop) or a second way into a folder already listed is not followed again.
    """
    base = root / value
    if not base.is_dir():
        raise ExtractionError(
            f"images.{split}={value}: {base} is not a directory; the imagefolder layout needs "
            f"<root>/{value}/<class>/<image> (or set images.layout=filelist)"
        )
    pairs: list[tuple[str, str]] = []
    ignored = loose = 0
    empty: list[str] = []
    repeated: list[str] = []
    entries = sorted(os.scandir(base), key=lambda e: e.name)
    classes = [e for e in entries if e.is_dir()]
    loose = len(entries) - len(classes)
    # The root, the split folder and every class folder count as listed from the start, so a
    # link to any of them is never walked as part of another class.
    seen = {_dir_key(root), _dir_key(base), *(_dir_key(Path(e.path)) for e in classes)}
    for entry in classes:
        check_name(entry.name, f"images.{split}: class folder", base / entry.name)
        found, skipped = _walk_images(root, Path(entry.path), entry.name, seen, repeated, split)
        pairs += found
        ignored += skipped
        if not found:
            empty.append(entry.name)
    return pairs, ignored, empty, loose, repeated


def _walk_images(
    root: Path, top: Path, label: str, seen: set, repeated: list[str], split: str
) -> tuple[list[tuple[str, str]], int]:
    """(path, label) of every image below `top` and the non-image count, following directory
    links to directories not `seen` yet (the others go to `repeated`, relative to root)."""
    pairs: list[tuple[str, str]] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            key = _dir_key(Path(dirpath) / name)
            if key in seen:
                repeated.append(os.path.relpath(os.path.join(dirpath, name), root))
            else:
                seen.add(key)
                kept.append(name)
        dirnames[:] = kept
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if is_image(name):
                path = f"{rel}/{name}"
                check_name(path, f"images.{split}: image", root / path)
                pairs.append((path, label))
            else:
                ignored += 1
    return pairs, ignored


def _scan_flat(root: Path, value: str, split: str) -> tuple[list[tuple[str, str]], int, list]:
    """(path, "") pairs of every image under root/value/ (no classes), the non-image count and
    the directory links not followed again (each real directory is listed once)."""
    base = root / value
    if not base.is_dir():
        raise ExtractionError(
            f"images.{split}={value}: {base} is not a directory; the flat layout needs "
            f"<root>/{value}/**/<image>"
        )
    repeated: list[str] = []
    seen = {_dir_key(root), _dir_key(base)}
    pairs, ignored = _walk_images(root, base, UNLABELLED, seen, repeated, split)
    return pairs, ignored, repeated


def _dir_key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


# Characters str.splitlines() breaks lines at: classes.txt and *_files.txt hold one name a line.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def check_name(name: str, what: str, path: str | os.PathLike) -> None:
    """Refuse a class or file name that the one-name-a-line store files cannot hold (a line
    break inside it), or that is not valid UTF-8; the message names `what` and `path`."""
    if any(c in name for c in LINE_BREAKS):
        raise ExtractionError(
            f"{what} {str(path)!r} has a line break (newline or carriage return) in its name; "
            "classes.txt and *_files.txt hold one name a line, so it cannot be listed: rename it"
        )
    try:
        name.encode()
    except UnicodeEncodeError:
        raise ExtractionError(
            f"{what} {str(path)!r} has a name that is not valid UTF-8; classes.txt and "
            "*_files.txt are UTF-8 text: rename it"
        ) from None


def _read_filelist(root: Path, value: str, split: str) -> tuple[list[tuple[str, str]], int]:
    """(path, label) pairs of a `path,label` CSV, and how many rows name non-image files."""
    file = root / value
    if not file.is_file() and (root / f"{value}.csv").is_file():
        file = root / f"{value}.csv"
    if not file.is_file():
        raise ExtractionError(
            f"images.{split}={value}: no file list at {file} (or {file}.csv); the filelist layout "
            "needs one CSV per split with rows `path,label`"
        )
    pairs: list[tuple[str, str]] = []
    ignored = 0
    with open(file, newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if not row or (number == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                continue
            if number == 1 and [c.strip().lower() for c in row] == ["path"]:
                continue
            if len(row) == 1 and row[0].strip():  # `path` alone: an unlabelled image
                row = [row[0], UNLABELLED]
            elif len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ExtractionError(
                    f"{file}:{number}: expected `path,label` (or `path` alone for an unlabelled "
                    f"store), found {','.join(row)!r}"
                )
            path, label = row[0].strip(), row[1].strip()
            check_name(path, f"{file}:{number}: path", path)
            if label:
                check_name(label, f"{file}:{number}: label", label)
            if not is_image(os.path.basename(path)):
                ignored += 1
                continue
            pairs.append((path, label))
    return pairs, ignored


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
