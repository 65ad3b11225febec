"""Generate the shipped ImageNet-21K-P tree file from WordNet 3.0 (run once; output committed).

    python -m clusterbench.benchmarks.imagenet21k.build_tree \\
        --wordnet-dir /usr/share/wordnet --is-a /path/to/imagenet/is_a.txt \\
        --out clusterbench/benchmarks/imagenet21k/w21_tree.tsv.gz

Rules (they reproduce the class counts of the paper's coarse and leaf benchmarks):
- classes and their order (label id = line number) come from timm's
  `imagenet21k_miil_w21_synsets.txt`; names from timm's `imagenet_synset_to_lemma.txt`,
  falling back to the WordNet lemmas for ancestors timm does not name;
- a synset's parents are its WordNet noun hypernyms (`@`); instance hypernyms (`@i`) are
  ignored, so e.g. "sun" is a root;
- with several parents, the one listed LAST for that child in ImageNet's `is_a.txt` wins.
  `is_a.txt` only breaks ties: it is read, never copied into the output.

WordNet's `data.noun` is parsed directly instead of going through nltk: the format is
simple and stable, it avoids nltk's corpus downloader and version-dependent data paths, and
it shows exactly which pointers count (`@` vs `@i`, `~` vs `~i`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from clusterbench.benchmarks.imagenet21k.timm import LEMMAS, W21_SYNSETS, timm_info_file
from clusterbench.benchmarks.imagenet21k.tree import (
    Tree,
    default_tree_path,
    tree_from_parents,
    write_tree_file,
)


class Synset(NamedTuple):
    words: tuple[str, ...]
    hypernyms: tuple[str, ...]  # `@` targets as wnids, in data.noun order
    has_hyponym: bool  # any `~` pointer (instance hyponyms `~i` excluded)


def parse_data_noun(path: str | os.PathLike[str]) -> dict[str, Synset]:
    """wnid -> Synset from a WordNet `data.noun`.

    Line format: `offset lex_filenum ss_type w_cnt word lex_id [word lex_id]... p_cnt
    [ptr_symbol offset pos source/target]... | gloss`, with w_cnt in hex and p_cnt decimal.
    Lines starting with spaces are the license header.
    """
    synsets: dict[str, Synset] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith(" ") or not line.strip():
                continue
            fields = line.partition(" | ")[0].split()
            try:
                w_cnt = int(fields[3], 16)
                words = tuple(fields[4 : 4 + 2 * w_cnt : 2])
                i = 4 + 2 * w_cnt
                p_cnt = int(fields[i])
                ptrs = [fields[i + 1 + 4 * k : i + 5 + 4 * k] for k in range(p_cnt)]
                if len(words) != w_cnt or any(len(p) != 4 for p in ptrs):
                    raise IndexError
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: not a data.noun synset line") from None
            synsets["n" + fields[0]] = Synset(
                words=words,
                hypernyms=tuple("n" + p[1] for p in ptrs if p[0] == "@" and p[2] == "n"),
                has_hyponym=any(p[0] == "~" and p[2] == "n" for p in ptrs),
            )
    return synsets


def read_is_a(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """child wnid -> parent wnids in file order, from ImageNet's `is_a.txt` (`parent child`)."""
    parents: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                parent, child = line.split()
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'parent child'") from None
            parents.setdefault(child, []).append(parent)
    return parents


def choose_parent(wnid: str, synsets: dict[str, Synset], is_a: dict[str, list[str]]) -> str | None:
    """The single tree parent of `wnid`: its only `@` hypernym, or the last one is_a.txt lists."""
    hyper = synsets[wnid].hypernyms
    if len(hyper) <= 1:
        return hyper[0] if hyper else None
    listed = [p for p in is_a.get(wnid, ()) if p in hyper]
    if not listed:
        raise ValueError(f"{wnid} has hypernyms {list(hyper)} but is_a.txt lists none of them")
    return listed[-1]


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [ln.strip() for ln in fh if ln.strip()]


def read_lemmas(path: str | os.PathLike[str]) -> dict[str, str]:
    """wnid -> display name from a `wnid<TAB>lemma, lemma` file."""
    out: dict[str, str] = {}
    for ln in read_lines(path):
        wnid, _, name = ln.partition("\t")
        out[wnid] = name.strip()
    return out


def build_tree(
    synsets: dict[str, Synset],
    is_a: dict[str, list[str]],
    class_wnids: Sequence[str],
    lemmas: dict[str, str],
) -> Tree:
    """Tree over the classes (in the given order) and every synset on their paths to a root."""
    if len(set(class_wnids)) != len(class_wnids):
        raise ValueError("class list contains duplicate wnids")
    missing = [w for w in class_wnids if w not in synsets]
    if missing:
        raise ValueError(f"{len(missing)} classes are not WordNet noun synsets, e.g. {missing[:3]}")
    parent_of: dict[str, str | None] = {}
    todo = list(class_wnids)
    while todo:
        wnid = todo.pop()
        if wnid in parent_of:
            continue
        parent_of[wnid] = p = choose_parent(wnid, synsets, is_a)
        if p is not None:
            todo.append(p)
    names = {
        w: lemmas.get(w) or ", ".join(x.replace("_", " ") for x in synsets[w].words)
        for w in parent_of
    }
    return tree_from_parents(
        class_wnids,
        parent_of,
        names,
        has_hypernym={w: bool(synsets[w].hypernyms) for w in parent_of},
        has_hyponym={w: synsets[w].has_hyponym for w in parent_of},
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet-dir", required=True, type=Path, help="holds WordNet 3.0 data.noun")
    ap.add_argument("--is-a", required=True, type=Path, help="ImageNet is_a.txt (tie-breaks)")
    ap.add_argument("--out", type=Path, default=default_tree_path())
    ap.add_argument("--classes", type=Path, default=None, help=f"default: timm's {W21_SYNSETS}")
    ap.add_argument("--lemmas", type=Path, default=None, help=f"default: timm's {LEMMAS}")
    args = ap.parse_args(argv)

    classes = read_lines(args.classes or timm_info_file(W21_SYNSETS))
    tree = build_tree(
        parse_data_noun(args.wordnet_dir / "data.noun"),
        read_is_a(args.is_a),
        classes,
        read_lemmas(args.lemmas or timm_info_file(LEMMAS)),
    )
    write_tree_file(
        args.out,
        tree,
        comments=(
            "ImageNet-21K-P (winter 21) semantic tree; generated by "
            "`python -m clusterbench.benchmarks.imagenet21k.build_tree`.",
            "parent: WordNet 3.0 noun hypernym (@, not @i); with several, the last one "
            "ImageNet's is_a.txt lists for the child.",
            "label: class id in timm's imagenet21k_miil_w21_synsets.txt order, -1 for ancestors.",
            "hypernym/hyponym: 1 if WordNet has an @ / ~ pointer (instance pointers ignored).",
            "name: timm's imagenet_synset_to_lemma.txt, else the WordNet lemmas.",
            f"{tree.num_classes} classes, {tree.num_nodes} nodes.",
        ),
    )
    print(f"wrote {args.out}: {tree.num_classes} classes, {tree.num_nodes} nodes")


if __name__ == "__main__":
    main()
