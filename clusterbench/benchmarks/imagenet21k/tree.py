"""The ImageNet-21K-P (winter 21) semantic tree, loaded from the file shipped with the package.

The tree is derived once from WordNet 3.0 by `clusterbench.benchmarks.imagenet21k.build_tree` and
committed as `w21_tree.tsv.gz`, so nothing here needs WordNet, nltk or ImageNet at run time.

File format (gzip, UTF-8, tab-separated; lines starting with `#` are provenance comments):

    wnid  parent  label  hypernym  hyponym  name

one row per node. Nodes are the 10450 classes followed by every other synset on the
chosen-parent path from a class to the WordNet root. `label` is the class id (the row's
position in timm's `imagenet21k_miil_w21_synsets.txt`) or -1 for a non-class synset, and
the class rows come first in label order, so a class id is also its node index. `parent` is
the chosen WordNet hypernym (empty at a root). `hypernym` / `hyponym` are 1 when WordNet
gives the synset a noun hypernym (`@`) / hyponym (`~`) pointer; instance pointers do not
count. Storing the class order in the file keeps the runtime independent of the installed
timm version; a test checks it against timm.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from clusterbench.core.atomic import write_bytes_atomic
from clusterbench.core.errors import TreeFileError

TREE_FILENAME = "w21_tree.tsv.gz"
COLUMNS = ("wnid", "parent", "label", "hypernym", "hyponym", "name")


def depths(parent: np.ndarray) -> np.ndarray:
    """(N,) read-only number of edges from each node to its root along `parent` (-1 = root)."""
    depth = np.zeros(len(parent), dtype=np.int64)
    cur = np.array(parent, dtype=np.int64)
    while (alive := cur >= 0).any():
        depth[alive] += 1
        cur[alive] = parent[cur[alive]]
    depth.setflags(write=False)
    return depth


@dataclass(frozen=True, eq=False)
class Tree:
    """Nodes of the chosen-parent WordNet tree; the first `num_classes` nodes are the classes.

    Arrays are read-only. Class-level views (`depth`, `class_parent`, chains) are derived
    lazily and cached, because every benchmark rule is a small function of them.
    """

    wnids: tuple[str, ...]
    names: tuple[str, ...]
    parent: np.ndarray  # (num_nodes,) int64 node index of the chosen parent, -1 at a root
    num_classes: int
    has_hypernym: np.ndarray  # (num_nodes,) bool: WordNet `@` pointer present
    has_hyponym: np.ndarray  # (num_nodes,) bool: WordNet `~` pointer present

    def __post_init__(self) -> None:
        n = len(self.wnids)
        for name, dtype in (("parent", np.int64), ("has_hypernym", bool), ("has_hyponym", bool)):
            arr = np.array(getattr(self, name), dtype=dtype)  # own read-only copy
            if arr.shape != (n,):
                raise ValueError(f"Tree.{name} has shape {arr.shape}, expected ({n},)")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if len(self.names) != n:
            raise ValueError(f"Tree.names has {len(self.names)} entries, expected {n}")
        if not 0 < self.num_classes <= n:
            raise ValueError(f"Tree.num_classes={self.num_classes} not in 1..{n}")
        if len(set(self.wnids)) != n:
            raise ValueError("Tree.wnids contains duplicates")
        if ((self.parent < -1) | (self.parent >= n)).any():
            raise ValueError("Tree.parent holds an index outside the node list")
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        # Pointer jumping: after n steps every walk must have left the tree through a root.
        cur = np.arange(len(self.wnids))
        for _ in range(len(self.wnids)):
            cur = cur[cur >= 0]
            if cur.size == 0:
                return
            cur = self.parent[cur]
        raise ValueError("Tree.parent contains a cycle")

    @property
    def num_nodes(self) -> int:
        return len(self.wnids)

    @property
    def class_wnids(self) -> tuple[str, ...]:
        return self.wnids[: self.num_classes]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.names[: self.num_classes]

    @cached_property
    def _node_of(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    def node(self, wnid: str) -> int:
        """Node index of a wnid (== class id for classes)."""
        try:
            return self._node_of[wnid]
        except KeyError:
            raise KeyError(f"{wnid!r} is not in the tree") from None

    def is_class(self, node: int) -> bool:
        return 0 <= node < self.num_classes

    def path_to_root(self, node: int) -> list[int]:
        """Node, its chosen parent, ... up to the root, including non-class synsets."""
        out = [node]
        while self.parent[out[-1]] >= 0:
            out.append(int(self.parent[out[-1]]))
        return out

    @cached_property
    def class_parent(self) -> np.ndarray:
        """(C,) nearest class on the path to the root (chain[1]), or -1; skips non-classes."""
        c = self.num_classes
        cur = self.parent[:c].copy()
        while True:
            pending = cur >= c  # a non-class ancestor: keep climbing
            if not pending.any():
                break
            cur[pending] = self.parent[cur[pending]]
        cur.setflags(write=False)
        return cur

    @cached_property
    def depth(self) -> np.ndarray:
        """(C,) depth(c) = len(chain(c)) - 1: the number of class ancestors of c."""
        return depths(self.class_parent)

    @cached_property
    def node_depth(self) -> np.ndarray:
        """(num_nodes,) edges from each node up to its root (non-class synsets count)."""
        return depths(self.parent)

    @cached_property
    def chains(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices): chain(c) = indices[indptr[c]:indptr[c+1]] = c, then class ancestors."""
        c = self.num_classes
        length = self.depth + 1
        indptr = np.zeros(c + 1, dtype=np.int64)
        np.cumsum(length, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int64)
        cur = np.arange(c, dtype=np.int64)
        step = 0
        while (alive := step < length).any():
            indices[indptr[:-1][alive] + step] = cur[alive]
            cur[alive] = self.class_parent[cur[alive]]
            step += 1
        indptr.setflags(write=False)
        indices.setflags(write=False)
        return indptr, indices

    def chain(self, cls: int) -> list[int]:
        """c, then its class ancestors following the chosen parent (non-classes skipped)."""
        if not self.is_class(cls):
            raise IndexError(f"class id {cls} not in 0..{self.num_classes - 1}")
        indptr, indices = self.chains
        return indices[indptr[cls] : indptr[cls + 1]].tolist()

    def descendants(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) per class: the classes below it (itself included), among
        the classes `mask` keeps (all without one)."""
        indptr, indices = self.chains
        desc = np.repeat(np.arange(self.num_classes), np.diff(indptr))  # chains: (desc, anc)
        keep = np.ones(desc.size, dtype=bool) if mask is None else mask[desc]
        desc, anc = desc[keep], indices[keep]
        order = np.argsort(anc, kind="stable")
        ptr = np.zeros(self.num_classes + 1, dtype=np.int64)
        np.cumsum(np.bincount(anc, minlength=self.num_classes), out=ptr[1:])
        return ptr, desc[order]

    def with_descendants(self, classes: np.ndarray) -> np.ndarray:
        """Sorted class ids of `classes` and every class below them."""
        mark = np.zeros(self.num_classes, dtype=bool)
        mark[np.asarray(classes, dtype=np.int64)] = True
        parent, depth = np.asarray(self.class_parent), np.asarray(self.depth)
        for d in range(1, int(depth.max()) + 1):  # parents are final before their children
            nodes = np.flatnonzero(depth == d)
            mark[nodes] |= mark[parent[nodes]]
        return np.flatnonzero(mark)


def default_tree_path() -> Path:
    """Path of the tree file shipped inside the package."""
    return Path(str(resources.files(__package__).joinpath(TREE_FILENAME)))


@lru_cache(maxsize=4)
def _load_cached(path: str) -> Tree:
    return read_tree_file(path)


def load_tree(path: str | os.PathLike[str] | None = None) -> Tree:
    """The ImageNet-21K-P tree (shipped file by default); cached, so repeated calls are free."""
    return _load_cached(str(Path(path) if path is not None else default_tree_path()))


def read_tree_file(path: str | os.PathLike[str]) -> Tree:
    """Parse a tree file; raises TreeFileError naming the file, line and problem."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = [ln.rstrip("\n") for ln in fh if not ln.startswith("#")]
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TreeFileError(f"{path}: cannot read gzip TSV tree file ({exc})") from exc
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        found = lines[0] if lines else "<empty>"
        raise TreeFileError(f"{path}: expected header {COLUMNS}, found {found!r}")
    rows = [ln.split("\t") for ln in lines[1:]]
    for i, row in enumerate(rows):
        if len(row) != len(COLUMNS):
            raise TreeFileError(
                f"{path}: data row {i + 1} has {len(row)} fields, expected {len(COLUMNS)}"
            )
    wnids = tuple(r[0] for r in rows)
    node_of = {w: i for i, w in enumerate(wnids)}
    try:
        parent = np.array([node_of[r[1]] if r[1] else -1 for r in rows], dtype=np.int64)
        labels = np.array([int(r[2]) for r in rows], dtype=np.int64)
        hyper = np.array([r[3] == "1" for r in rows], dtype=bool)
        hypo = np.array([r[4] == "1" for r in rows], dtype=bool)
    except KeyError as exc:
        raise TreeFileError(f"{path}: parent {exc} is not a node of the file") from None
    except ValueError as exc:
        raise TreeFileError(f"{path}: bad label column ({exc})") from None
    num_classes = int((labels >= 0).sum())
    if (
        not np.array_equal(labels[:num_classes], np.arange(num_classes))
        or (labels[num_classes:] != -1).any()
    ):
        raise TreeFileError(f"{path}: class rows must come first with labels 0..C-1 in order")
    try:
        return Tree(
            wnids=wnids,
            names=tuple(r[5] for r in rows),
            parent=parent,
            num_classes=num_classes,
            has_hypernym=hyper,
            has_hyponym=hypo,
        )
    except ValueError as exc:
        raise TreeFileError(f"{path}: {exc}") from None


def write_tree_file(path: str | os.PathLike[str], tree: Tree, comments: Iterable[str] = ()) -> None:
    """Write `tree` atomically and byte-reproducibly (gzip mtime 0), with `#` comment lines."""
    path = Path(path)
    out: list[str] = [f"# {c}" for c in comments]
    out.append("\t".join(COLUMNS))
    for i, wnid in enumerate(tree.wnids):
        p = int(tree.parent[i])
        name = tree.names[i]
        if "\t" in name or "\n" in name:
            raise ValueError(f"name of {wnid} contains a tab or newline: {name!r}")
        out.append(
            "\t".join(
                (
                    wnid,
                    tree.wnids[p] if p >= 0 else "",
                    str(i if i < tree.num_classes else -1),
                    "1" if tree.has_hypernym[i] else "0",
                    "1" if tree.has_hyponym[i] else "0",
                    name,
                )
            )
        )
    data = gzip.compress(("\n".join(out) + "\n").encode("utf-8"), compresslevel=9, mtime=0)
    write_bytes_atomic(path, data)


def tree_from_parents(
    class_wnids: Sequence[str],
    parent_of: dict[str, str | None],
    names: dict[str, str],
    has_hypernym: dict[str, bool],
    has_hyponym: dict[str, bool],
) -> Tree:
    """Assemble a Tree: the classes in the given order, then their other ancestors by wnid."""
    nodes = list(class_wnids)
    seen = set(nodes)
    extra: set[str] = set()
    for wnid in class_wnids:
        p = parent_of.get(wnid)
        while p is not None and p not in seen and p not in extra:
            extra.add(p)
            p = parent_of.get(p)
    nodes.extend(sorted(extra))
    index = {w: i for i, w in enumerate(nodes)}
    parent = np.array(
        [index[p] if (p := parent_of.get(w)) is not None else -1 for w in nodes], dtype=np.int64
    )
    return Tree(
        wnids=tuple(nodes),
        names=tuple(names[w] for w in nodes),
        parent=parent,
        num_classes=len(class_wnids),
        has_hypernym=np.array([has_hypernym[w] for w in nodes], dtype=bool),
        has_hyponym=np.array([has_hyponym[w] for w in nodes], dtype=bool),
    )
