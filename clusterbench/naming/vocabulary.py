"""The candidate names of cluster naming (`naming.vocabulary`) and their text embeddings.

- `wordnet`: every WordNet noun of the shipped ImageNet-21K tree (`benchmarks/imagenet21k/tree.py`:
  the 10450 classes and the 1476 synsets between them and the root, 11926 in all), named by its
  first lemma (the tree's `name` column, which is timm's `imagenet_synset_to_lemma.txt`). A
  first lemma that several synsets share ("crane" the bird and the machine) carries the wnid,
  `crane (n03126707)`, so every name is unique. timm's lemma file lists 21843 synsets, but
  only those on the shipped tree can be scored against it, so the vocabulary is the tree's.
- `classes`: the view's classes (their tree names when they are wnids, else as named).
- a path: a UTF-8 file of names, one per line; a name that is a wnid of the tree or one of the
  `wordnet` names above stands for that synset when scoring.

Text embeddings come from the zero-shot producer's text side (`producers/zeroshot`): the
user's file (`zeroshot.text_embeddings`, read by `load_class_embeddings`, which checks the
class id of every row) or open_clip's text tower (`text_class_embeddings`, 7 prompts). A file
holds one row per vocabulary entry in vocabulary order (its ids: the wnids for tree synsets,
else the names themselves), or, for a vocabulary of tree synsets, the zero-shot format: the
10450 classes in tree order (the vocabulary then keeps the synsets the file covers), or all
11926 tree nodes in node order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.core.errors import BenchmarkFileError, ConfigError
from clusterbench.producers.zeroshot.embeddings import (
    ClassEmbeddings,
    class_embeddings,
    sidecar,
)
from clusterbench.producers.zeroshot.text import lemmas, text_class_embeddings

KINDS = ("wordnet", "classes")


@dataclass(frozen=True)
class Vocabulary:
    """Candidate names: `names` (unique, what a cluster is called), `ids` (the class id of each
    text-embedding row: a wnid, or the name), `texts` (what the text tower embeds: the lemma
    list "dog, domestic dog, ..." of a synset, or the name) and `nodes` (the tree node of each
    name, -1 where the name is not a synset of the tree)."""

    kind: str
    names: tuple[str, ...]
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    nodes: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    @property
    def on_tree(self) -> bool:
        """Every name is a synset of the tree: file rows may follow the tree's order."""
        return bool(len(self) and (self.nodes >= 0).all())

    def subset(self, keep: np.ndarray) -> Vocabulary:
        keep = np.asarray(keep, dtype=np.int64)
        pick = [int(i) for i in keep]
        return Vocabulary(
            self.kind,
            tuple(self.names[i] for i in pick),
            tuple(self.ids[i] for i in pick),
            tuple(self.texts[i] for i in pick),
            self.nodes[keep],
        )


@lru_cache(maxsize=2)
def synset_names(tree: Tree) -> tuple[str, ...]:
    """The unique display name of every tree node: its first lemma, with the wnid when another
    node shares that lemma."""
    first = [lemmas(name)[0] for name in tree.names]
    shared = Counter(first)
    return tuple(
        lemma if shared[lemma] == 1 else f"{lemma} ({wnid})"
        for lemma, wnid in zip(first, tree.wnids, strict=True)
    )


def tree_vocabulary(kind: str, nodes: np.ndarray, tree: Tree) -> Vocabulary:
    nodes = np.asarray(nodes, dtype=np.int64)
    display = synset_names(tree)
    return Vocabulary(
        kind,
        tuple(display[n] for n in nodes),
        tuple(tree.wnids[n] for n in nodes),
        tuple(tree.names[n] for n in nodes),
        nodes,
    )


def node_of(name: str, tree: Tree) -> int:
    """The tree node a name or wnid stands for, -1 for none."""
    return _lookup(tree).get(name, -1)


def wnid_node(wnid: str, tree: Tree) -> int:
    """The tree node of a wnid, -1 when it is not one of the tree's."""
    try:
        return tree.node(str(wnid))
    except KeyError:
        return -1


@lru_cache(maxsize=2)
def _lookup(tree: Tree) -> dict[str, int]:
    found = {name: i for i, name in enumerate(synset_names(tree))}
    found.update({wnid: i for i, wnid in enumerate(tree.wnids)})
    return found


def read_names(path: Path) -> list[str]:
    """A user's names, one per line; an empty line or a name given twice is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"naming.vocabulary={path}: no such file; expected wordnet, classes or a file of "
            "names, one per line"
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"naming.vocabulary={path} is not readable UTF-8 text ({exc})") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise ConfigError(
                f"{path} line {number} is empty; expected one name per line, none empty"
            )
        if name in seen:
            raise ConfigError(
                f"{path} line {number} repeats {name!r} (first on line {seen[name]}); every name "
                "must be given once"
            )
        seen[name] = number
        names.append(name)
    if len(names) < 2:
        raise ConfigError(f"{path} lists {len(names)} name(s); naming needs at least 2")
    return names


def build_vocabulary(
    setting: str, class_names: list[str] | None, tree: Tree | None = None
) -> Vocabulary:
    """The vocabulary `naming.vocabulary` names (module docstring); `class_names` are the view's."""
    tree = tree or load_tree()
    setting = str(setting)
    if setting == "wordnet":
        return tree_vocabulary("wordnet", np.arange(tree.num_nodes), tree)
    if setting == "classes":
        if not class_names:
            raise ConfigError(
                "naming.vocabulary=classes: the run's dataset names no classes (no classes.txt); "
                "use naming.vocabulary=wordnet or a file of names"
            )
        nodes = np.array([wnid_node(c, tree) for c in class_names], dtype=np.int64)
        if (nodes >= 0).all():
            return tree_vocabulary("classes", nodes, tree)
        names = tuple(str(c) for c in class_names)
        return Vocabulary("classes", names, names, names, np.full(len(names), -1, dtype=np.int64))
    path = Path(setting).expanduser()
    if not path.is_file() and "/" not in setting and "." not in setting:
        raise ConfigError(
            f"naming.vocabulary={setting!r}: expected one of {KINDS} or a file of names"
        )
    names = tuple(read_names(path))
    nodes = np.array([node_of(n, tree) for n in names], dtype=np.int64)
    return Vocabulary(f"file {path}", names, names, names, nodes)


def file_rows(file: Path) -> int | None:
    """Rows of a text-embedding file, read without loading it (None: not readable here; the
    loader then says what is wrong)."""
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as npz:
                return int(npz["wnids"].shape[0]) if "wnids" in npz.files else None
        side = sidecar(file)
        if side.is_file():
            return sum(1 for line in side.read_text(encoding="utf-8").splitlines() if line.strip())
        return int(np.load(file, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, EOFError, IndexError, UnicodeDecodeError):
        return None


def embed_vocabulary(
    vocab: Vocabulary,
    zeroshot: dict,
    extractor: dict,
    store_meta: dict,
    cache_dir: str | Path,
    device: str,
    tree: Tree | None = None,
) -> tuple[Vocabulary, ClassEmbeddings]:
    """(the vocabulary, (len(vocab), D) unit text embeddings row for row). With a tree-order
    file of the 10450 classes, the vocabulary shrinks to the synsets the file covers."""
    if zeroshot.get("text_embeddings"):
        return _from_file(vocab, zeroshot, tree or load_tree())
    if str(zeroshot.get("lemma", "first")) == "majority":
        raise ConfigError(
            "zeroshot.lemma=majority picks a lemma by voting with labelled images, which naming "
            "does not have; use zeroshot.lemma=first (default) or mean"
        )
    # The text tower embeds the vocabulary's own texts (the lemma lists of tree synsets).
    emb = text_class_embeddings(
        zeroshot,
        extractor,
        store_meta,
        None,
        Path(cache_dir),
        device,
        names=list(vocab.texts),
        wnids=list(vocab.ids),
    )
    return vocab, emb


def _from_file(vocab: Vocabulary, zeroshot: dict, tree: Tree) -> tuple[Vocabulary, ClassEmbeddings]:
    file = Path(str(zeroshot["text_embeddings"])).expanduser()
    rows = file_rows(file)
    ids: tuple[str, ...] = vocab.ids
    if vocab.on_tree and rows != len(vocab):
        if rows == tree.num_nodes:
            ids = tree.wnids
        elif rows == tree.num_classes:
            ids = tree.class_wnids
    emb = class_embeddings(zeroshot, {}, {}, list(ids))
    if ids is vocab.ids:
        return vocab, emb
    row_of = {w: i for i, w in enumerate(ids)}
    have = np.array([w in row_of for w in vocab.ids], dtype=bool)
    if not have.any():
        raise BenchmarkFileError(
            f"zeroshot.text_embeddings={file} covers none of the {len(vocab)} names of "
            f"naming.vocabulary={vocab.kind}"
        )
    if not have.all() and vocab.kind != "wordnet":
        first = vocab.ids[int(np.flatnonzero(~have)[0])]
        raise BenchmarkFileError(
            f"zeroshot.text_embeddings={file} has no row for {first} "
            f"({vocab.names[int(np.flatnonzero(~have)[0])]}), one of the "
            f"{int((~have).sum())} names of naming.vocabulary={vocab.kind} it lacks; give "
            f"a file with one row per name (or all {tree.num_nodes} tree nodes)"
        )
    kept = vocab.subset(np.flatnonzero(have))
    rows_kept = np.array([row_of[w] for w in kept.ids], dtype=np.int64)
    info = {**emb.info, "rows_in_file": len(ids), "vocabulary_kept": len(kept)}
    return kept, ClassEmbeddings(emb.vectors[rows_kept], emb.logit_scale, info, emb.class_ids)
