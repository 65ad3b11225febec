"""The tree generator on a tiny WordNet-format fixture, and the shipped ImageNet-21K-P tree."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.build_tree import (
    Synset,
    build_tree,
    choose_parent,
    main,
    parse_data_noun,
    read_is_a,
    read_lemmas,
    read_lines,
)
from clusterbench.benchmarks.imagenet21k.timm import LEMMAS, W21_SYNSETS, timm_info_file
from clusterbench.benchmarks.imagenet21k.tree import (
    Tree,
    TreeFileError,
    default_tree_path,
    load_tree,
    read_tree_file,
    write_tree_file,
)
from tests.helpers import FIXTURES
from tests.helpers.tree import ANIMAL, DOG, ORGANISM, PUPPY, SLED_DOG, SUN, TOOL

FIXTURE = FIXTURES / "wordnet_tiny"  # its class ids: DOG, ORGANISM, ... of helpers.tree


@pytest.fixture(scope="module")
def tiny() -> Tree:
    return build_tree(
        parse_data_noun(FIXTURE / "data.noun"),
        read_is_a(FIXTURE / "is_a.txt"),
        read_lines(FIXTURE / "synsets.txt"),
        read_lemmas(FIXTURE / "lemmas.txt"),
    )


# --- generator on the fixture ----------------------------------------------------------------


def test_parse_data_noun_pointers() -> None:
    syn = parse_data_noun(FIXTURE / "data.noun")
    assert len(syn) == 14  # header lines skipped
    assert len(syn["n00004000"].words) == 10  # w_cnt "0a" is hex
    assert syn["n00004000"].hypernyms == ("n00002000",)  # verb pointer `+` ignored
    assert syn["n00007000"].hypernyms == ("n00004000", "n00005000")  # file order kept
    assert syn["n00013000"].hypernyms == ()  # instance hypernym `@i` is not a hypernym
    assert not syn["n00009000"].has_hyponym  # only an instance hyponym `~i`
    assert syn["n00006000"].has_hyponym


def test_parse_data_noun_rejects_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "data.noun"
    bad.write_text("00001740 03 n 02 entity 0 001 @ 00000001 n 0000 | truncated\n")
    with pytest.raises(ValueError, match=r"data.noun:1"):
        parse_data_noun(bad)


def test_choose_parent_last_listed_in_is_a_wins() -> None:
    syn = {"c": Synset(("c",), ("a", "b"), False)}
    assert choose_parent("c", syn, {"c": ["b", "a"]}) == "a"
    assert choose_parent("c", syn, {"c": ["a", "b"]}) == "b"
    # is_a entries that are not WordNet hypernyms only break ties, never add parents.
    assert choose_parent("c", syn, {"c": ["a", "zzz"]}) == "a"
    with pytest.raises(ValueError, match="lists none"):
        choose_parent("c", syn, {})


def test_fixture_tree_structure(tiny: Tree) -> None:
    assert list(tiny.class_wnids) == read_lines(FIXTURE / "synsets.txt")
    # Non-class ancestors follow the classes, sorted by wnid; pet, star, hammer are on no path.
    assert tiny.wnids[7:] == ("n00001740", "n00003000", "n00008000")
    parent = {
        w: (tiny.wnids[p] if p >= 0 else None) for w, p in zip(tiny.wnids, tiny.parent, strict=True)
    }
    assert parent["n00007000"] == "n00004000"  # dog: is_a lists pet, then animal (WordNet 1st)
    assert parent["n00010000"] == "n00008000"  # sled_dog: is_a lists working_animal last (2nd)
    assert parent["n00013000"] is None  # sun: only an instance hypernym
    assert parent["n00002000"] == "n00001740"
    assert tiny.depth.tolist() == [2, 0, 0, 1, 2, 3, 0]
    assert tiny.chain(PUPPY) == [PUPPY, DOG, ANIMAL, ORGANISM]
    assert tiny.chain(SLED_DOG) == [SLED_DOG, ANIMAL, ORGANISM]  # working_animal skipped
    assert tiny.chain(TOOL) == [TOOL]  # artifact and entity are not classes
    assert tiny.class_parent.tolist() == [ANIMAL, -1, -1, ORGANISM, ANIMAL, DOG, -1]
    assert tiny.path_to_root(SLED_DOG) == [SLED_DOG, 9, ANIMAL, ORGANISM, 7]


def test_fixture_tree_names_and_flags(tiny: Tree) -> None:
    assert tiny.names[DOG] == "dog, domestic dog"  # from the lemma file
    assert tiny.names[TOOL] == "tool, implement"  # not in the lemma file: WordNet lemmas
    assert tiny.names[tiny.node("n00008000")] == "working animal"
    assert tiny.has_hypernym[:7].tolist() == [True, True, False, True, True, True, True]
    assert tiny.has_hyponym[:7].tolist() == [True, True, False, True, False, False, True]


def test_fixture_leaves_and_coarse(tiny: Tree) -> None:
    assert np.flatnonzero(rules.imagenet21k_leaf_classes(tiny)).tolist() == [
        SUN,
        SLED_DOG,
        PUPPY,
        TOOL,
    ]
    assert np.flatnonzero(rules.wordnet_leaf_classes(tiny)).tolist() == [SLED_DOG, PUPPY]
    class_map, wnids = rules.coarse_labels(tiny, 1)
    # dog -> animal, puppy -> dog (one step only), sled_dog -> working_animal (a new label).
    assert wnids == [*tiny.wnids[:4], tiny.wnids[TOOL], "n00008000"]
    assert class_map.tolist() == [3, 1, 2, 3, 5, 0, 4]


def test_cli_writes_reproducible_file(tmp_path: Path, tiny: Tree) -> None:
    args = ["--wordnet-dir", str(FIXTURE), "--is-a", str(FIXTURE / "is_a.txt")]
    args += ["--classes", str(FIXTURE / "synsets.txt"), "--lemmas", str(FIXTURE / "lemmas.txt")]
    main([*args, "--out", str(tmp_path / "a.tsv.gz")])
    main([*args, "--out", str(tmp_path / "b.tsv.gz")])
    assert (tmp_path / "a.tsv.gz").read_bytes() == (tmp_path / "b.tsv.gz").read_bytes()
    back = read_tree_file(tmp_path / "a.tsv.gz")
    assert back.wnids == tiny.wnids and back.names == tiny.names
    assert np.array_equal(back.parent, tiny.parent)
    assert np.array_equal(back.has_hyponym, tiny.has_hyponym)
    assert np.array_equal(back.has_hypernym, tiny.has_hypernym)
    assert back.num_classes == 7


# --- tree file format ------------------------------------------------------------------------


def test_read_tree_file_errors(tmp_path: Path, tiny: Tree) -> None:
    path = tmp_path / "t.tsv.gz"
    path.write_bytes(gzip.compress(b"wnid\tparent\n"))
    with pytest.raises(TreeFileError, match="expected header"):
        read_tree_file(path)
    write_tree_file(path, tiny)
    text = gzip.decompress(path.read_bytes()).decode().replace("n00001740\t\t", "n00001740\tn9\t")
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(TreeFileError, match="n9"):
        read_tree_file(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(TreeFileError, match="t.tsv.gz"):
        read_tree_file(path)


def test_tree_rejects_cycles() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Tree(
            wnids=("a", "b"),
            names=("a", "b"),
            parent=np.array([1, 0]),
            num_classes=2,
            has_hypernym=np.ones(2, bool),
            has_hyponym=np.ones(2, bool),
        )


# --- the shipped tree --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w21() -> Tree:
    return load_tree()


def test_shipped_file_is_small() -> None:
    assert default_tree_path().stat().st_size < 1_000_000


def test_shipped_tree_matches_timm(w21: Tree) -> None:
    assert w21.num_classes == 10450
    assert list(w21.class_wnids) == read_lines(timm_info_file(W21_SYNSETS))
    lemmas = read_lemmas(timm_info_file(LEMMAS))
    assert all(lemmas[w] == n for w, n in zip(w21.class_wnids, w21.class_names, strict=True))


def test_shipped_tree_depths(w21: Tree) -> None:
    assert w21.depth.min() == 0 and w21.depth.max() == 11
    # Each chain step goes one level up.
    indptr, indices = rules.label_sets(w21)
    assert np.array_equal(np.diff(indptr), w21.depth + 1)
    assert np.array_equal(
        w21.depth[indices], np.concatenate([d - np.arange(d + 1) for d in w21.depth])
    )
    sun = w21.node("n09450163")  # only an instance hypernym in WordNet
    assert w21.parent[sun] == -1 and not w21.has_hypernym[sun]


@pytest.mark.parametrize(
    ("d", "expected"),
    [(1, 3987), (2, 5086), (3, 6772), (4, 8386), (5, 9429), (6, 9997), (7, 10241), (8, 10351)]
    + [(9, 10424), (11, 10450)],  # d=9 is not in the paper; 11 = max depth: nothing moves
)
def test_shipped_coarse_counts(w21: Tree, d: int, expected: int) -> None:
    class_map, wnids = rules.coarse_labels(w21, d)
    assert len(wnids) == expected
    assert np.array_equal(np.unique(class_map), np.arange(expected))


def test_shipped_leaf_counts(w21: Tree) -> None:
    assert rules.imagenet21k_leaf_classes(w21).sum() == 8153
    assert rules.wordnet_leaf_classes(w21).sum() == 7353
