"""Class text embeddings: a user's precomputed file, or open_clip's text tower (`text`).

A file (`zeroshot.text_embeddings=FILE`) holds float (C, D) rows, one per ImageNet-21K class in
the shipped tree's order (class id = row, C = 10450), D = the image feature dimension, and says
which class each row is:
- `FILE.npz` with `vectors` (C, D) and `wnids` (C,) strings, the class of each row; or
- `FILE.npy` with a sidecar `FILE.npy.classes.txt`, one wnid per line, the row order.
The class ids must be the tree's, row for row: a file made for another class order (a shift by
one row is enough to score 0 % zero-shot with nothing else amiss) is refused in one line naming
the file and the first row that disagrees. Rows are L2-normalised here anyway, so an
unnormalised file gives the same result; NaN, inf or zero rows are refused because they would
silently win or lose every comparison.

A plain `.npy` without the sidecar is accepted when its row count is the tree's class count,
with one warning per file and process that its order cannot be checked and how to add the
sidecar. Why not refuse it: the plain `.npy` was the documented format until class ids were
added, so the files users already have are plain; the row count still rules out files made for
another class set (ImageNet-21K's 21843 classes, the 1K, fall 11); and such a file holds
nothing that could be checked, so a refusal would only make its owner restate the tree's order
in a sidecar. A sidecar or an `.npz` is checked whenever it is there, and the text-tower cache
(`text`) always carries the class of each of its rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clusterbench.core.errors import BenchmarkFileError, ConfigError

log = logging.getLogger(__name__)

# open_clip's CLIP models learn logit_scale = log(100); a file carries no scale of its own.
DEFAULT_LOGIT_SCALE = 100.0
SIDECAR_SUFFIX = ".classes.txt"
FORMATS = (
    "an .npz with `vectors` (C, D) and `wnids` (C,), or an .npy with a sidecar "
    f"FILE.npy{SIDECAR_SUFFIX} (one wnid per line, the row order)"
)
_warned: set[str] = set()  # plain .npy files already warned about in this process


@dataclass
class ClassEmbeddings:
    """(C, D) unit rows in tree order plus the temperature that turns cosines into logits.

    `class_ids` says how the row order is known: checked against a file's class ids, not
    checkable (a plain .npy), or built by the text tower in tree order."""

    vectors: np.ndarray
    logit_scale: float = DEFAULT_LOGIT_SCALE
    info: dict = field(default_factory=dict)
    class_ids: str = ""


def sidecar(file: Path) -> Path:
    """The class-id sidecar of an .npy file: `FILE.npy.classes.txt`."""
    return file.with_name(file.name + SIDECAR_SUFFIX)


def read_wnids(file: Path) -> list[str]:
    """One wnid per line (blank lines ignored)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise BenchmarkFileError(f"{file} is not readable text ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_npz(file: Path) -> tuple[np.ndarray, list[str]]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in ("vectors", "wnids") if k not in npz.files]
            if missing:
                raise BenchmarkFileError(
                    f"{file} has no {' or '.join(missing)} array (it holds {npz.files}); "
                    f"expected {FORMATS}"
                )
            vectors, wnids = npz["vectors"], npz["wnids"]
    except (ValueError, OSError, EOFError) as exc:
        raise BenchmarkFileError(
            f"{file} is not a readable .npz of arrays ({exc}); save the wnids as a string "
            "array, e.g. np.savez(FILE, vectors=v, wnids=np.array(wnids, dtype=str))"
        ) from None
    if wnids.ndim != 1 or wnids.dtype.kind != "U":
        raise BenchmarkFileError(
            f"{file}: `wnids` must be a 1-D string array, found {wnids.dtype} {wnids.shape}"
        )
    return vectors, [str(w) for w in wnids]


def check_class_ids(found: Sequence[str], wnids: Sequence[str], rows: int, origin: str) -> None:
    """The class ids a file carries must be the tree's classes, row for row."""
    if len(found) != rows:
        raise BenchmarkFileError(
            f"{origin} lists {len(found)} class ids for {rows} embedding rows; expected one "
            "wnid per row, in row order"
        )
    for row, (have, want) in enumerate(zip(found, wnids, strict=False)):
        if have != want:
            raise BenchmarkFileError(
                f"{origin}: row {row} is class {have} but the tree's class {row} is {want}; "
                f"the rows must follow the tree's class order ({len(wnids)} ImageNet-21K "
                "classes, sorted wnids), so this file was made for another class order"
            )
    if len(found) != len(wnids):
        raise BenchmarkFileError(
            f"{origin} covers {len(found)} classes but the tree has {len(wnids)}; expected "
            "one row per tree class, in tree order"
        )


def load_class_embeddings(path: str | Path, wnids: Sequence[str]) -> tuple[np.ndarray, str]:
    """(len(wnids), D) float32 unit rows from a file, validated (module docstring), and how
    their class order is known."""
    file = Path(path).expanduser()
    c = len(wnids)
    if not file.is_file():
        raise BenchmarkFileError(
            f"zeroshot.text_embeddings={file} does not exist; expected class embeddings of "
            f"shape ({c}, D), one row per class in tree order: {FORMATS}"
        )
    ids: list[str] | None = None
    if file.suffix == ".npz":
        emb, ids = _read_npz(file)
        origin, order = f"{file} (wnids)", f"checked: {file.name} wnids"
    else:
        try:
            emb = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BenchmarkFileError(f"{file} is not a readable .npy array ({exc})") from None
        side = sidecar(file)
        origin, order = f"{file} (class ids: {side})", f"checked: {side.name}"
        if side.is_file():
            ids = read_wnids(side)
    if not isinstance(emb, np.ndarray) or emb.ndim != 2 or emb.dtype.kind != "f":
        shape = getattr(emb, "shape", "?")
        raise BenchmarkFileError(
            f"{file}: expected float class embeddings of shape ({c}, D), one row per class "
            f"in tree order, found {getattr(emb, 'dtype', type(emb).__name__)} {shape}"
        )
    if ids is not None:
        check_class_ids(ids, wnids, emb.shape[0], origin)
    elif emb.shape[0] != c:
        raise BenchmarkFileError(
            f"{file}: expected float class embeddings of shape ({c}, D), one row per class "
            f"in tree order, found {emb.dtype} {emb.shape}"
        )
    else:
        order = "unchecked: a plain .npy carries no class ids"
        if str(file) not in _warned:
            _warned.add(str(file))
            log.warning(
                "%s carries no class ids, so its row order cannot be checked against the "
                "tree's; write the wnid of each row, one per line, to %s (or save an .npz with "
                "vectors and wnids) to have it checked",
                file,
                sidecar(file),
            )
    return check_rows(emb.astype(np.float32), str(file)), order


def check_rows(emb: np.ndarray, origin: str) -> np.ndarray:
    """Unit rows; refuses NaN, inf and all-zero rows naming the first bad class."""
    norms = np.linalg.norm(emb, axis=1)
    bad = ~np.isfinite(emb).all(axis=1) | ~(norms > 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BenchmarkFileError(
            f"{origin}: {int(bad.sum())} class embedding rows are NaN, infinite or zero (first: "
            f"class {first}); every class needs a finite non-zero embedding"
        )
    return emb / norms[:, None]


def check_dims(image_dim: int, emb: ClassEmbeddings, origin: str) -> None:
    """Image and text embeddings must live in the same joint space."""
    dim = int(emb.vectors.shape[1])
    if dim != image_dim:
        raise ConfigError(
            f"image features have dimension {image_dim} but the class text embeddings "
            f"({origin}) have {dim}; both must come from the same CLIP model"
        )


def class_embeddings(
    zeroshot: dict,
    extractor: dict,
    store_meta: dict,
    class_wnids: Sequence[str],
    lemma_data=None,
    cache_dir: str | Path = ".cache",
    device: str = "auto",
    needed: np.ndarray | None = None,
) -> ClassEmbeddings:
    """The class embeddings a command uses: the user's file, else open_clip's text tower.

    `class_wnids` are the tree's classes in order (the rows a file must carry); `lemma_data()`
    returns (train rows, tree class labels) for the lemma vote; it is called only when the
    vote needs images; `needed` (class ids) limits the text work to them."""
    scale = zeroshot.get("logit_scale")
    if zeroshot.get("text_embeddings"):
        vectors, order = load_class_embeddings(zeroshot["text_embeddings"], class_wnids)
        return ClassEmbeddings(
            vectors,
            float(scale) if scale is not None else DEFAULT_LOGIT_SCALE,
            {"source": str(zeroshot["text_embeddings"])},
            order,
        )
    from clusterbench.producers.zeroshot.text import text_class_embeddings

    return text_class_embeddings(
        zeroshot,
        extractor,
        store_meta,
        lemma_data,
        Path(cache_dir),
        device,
        needed=needed,
        wnids=class_wnids,
    )
