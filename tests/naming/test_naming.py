"""Cluster naming: votes, unique names, tree scores, the command and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.core.errors import ClusterbenchError
from clusterbench.data.rows import FeatureRows
from clusterbench.naming.run import run_naming
from clusterbench.naming.score import related, score_names, wu_palmer
from clusterbench.naming.unique import assign_unique
from clusterbench.naming.vocabulary import build_vocabulary, synset_names
from clusterbench.naming.votes import PairCounter, majority, nearest_names, top_candidates
from clusterbench.run import run
from tests.helpers.cli import run_module
from tests.helpers.compose import compose_config
from tests.helpers.stores import write_store
from tests.helpers.tree import ANIMAL, DOG, ENTITY, PUPPY, SLED_DOG, SUN, TOOL

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115
DIM, PER_CLASS = 32, 40


# --- the parts ---------------------------------------------------------------------------------


def test_nearest_names_in_chunks_is_the_dense_argmax(single_thread):
    rng = np.random.default_rng(0)
    x, text = rng.standard_normal((203, 8)), rng.standard_normal((37, 8))
    dense = ((x / np.linalg.norm(x, axis=1, keepdims=True)) @ text.T
             / np.linalg.norm(text, axis=1)).argmax(1)  # fmt: skip
    got = np.concatenate(
        [b for _, b in nearest_names(FeatureRows(x.astype(np.float32)), text, "cpu", 17, 5)]
    )
    assert got.tolist() == dense.tolist()


def test_sparse_counts_equal_a_dense_bincount():
    rng = np.random.default_rng(1)
    k, v = 7, 50
    cluster, item = rng.integers(0, k, 5000), rng.integers(0, 12, 5000) * 4
    counter = PairCounter(v)
    for s in range(0, 5000, 333):  # chunk by chunk, merged as it goes
        counter.add(cluster[s : s + 333], item[s : s + 333])
    counts = counter.counts()
    dense = np.bincount(cluster * v + item, minlength=k * v).reshape(k, v)
    table = np.zeros((k, v), dtype=np.int64)
    table[counts.cluster, counts.item] = counts.count
    assert np.array_equal(table, dense) and counts.sizes(k).tolist() == dense.sum(1).tolist()
    indptr, items, got = top_candidates(counts, k, 3)
    for c in range(k):
        best = np.lexsort((np.arange(v), -dense[c]))[:3]
        assert items[indptr[c] : indptr[c + 1]].tolist() == best.tolist()
        assert got[indptr[c] : indptr[c + 1]].tolist() == dense[c, best].tolist()
    assert majority(counts, k + 1).tolist() == [*dense.argmax(1).tolist(), -1]  # k: empty


def test_unique_names_go_where_the_total_share_is_largest():
    # Clusters 0 and 1 both vote most for name 5; cluster 1 has 7 as its second choice,
    # cluster 2 only 5 as well: 0 -> 5 (0.9), 1 -> 7, 2 keeps its fallback.
    indptr = np.array([0, 1, 3, 4])
    items, shares = np.array([5, 5, 7, 5]), np.array([0.9, 0.6, 0.3, 0.5])
    for limit in (1 << 24, 0):  # dense linear_sum_assignment, then the sparse solver
        got = assign_unique(indptr, items, shares, dense_limit=limit)
        assert got.chosen.tolist() == [5, 7, -1]
    assert got.sparse == 1 and got.dense == 0


def test_dense_and_sparse_assignments_agree(single_thread):
    rng = np.random.default_rng(2)
    k, m = 40, 3
    items = np.concatenate([rng.choice(25, m, replace=False) for _ in range(k)])
    shares = rng.random(k * m)
    indptr = np.arange(0, k * m + 1, m)
    dense = assign_unique(indptr, items, shares).chosen
    sparse = assign_unique(indptr, items, shares, dense_limit=0).chosen
    named = dense[dense >= 0]
    assert np.unique(named).size == named.size  # unique
    total = {
        key: sum(shares[indptr[c] + list(items[indptr[c] : indptr[c + 1]]).index(ch)]
                 for c, ch in enumerate(got) if ch >= 0)
        for key, got in (("dense", dense), ("sparse", sparse))
    }  # fmt: skip
    assert total["dense"] == pytest.approx(total["sparse"])


def test_tree_scores(tree):
    assert wu_palmer(tree, DOG, DOG) == 1.0
    assert wu_palmer(tree, DOG, SLED_DOG) == pytest.approx(2 * 3 / (4 + 5))  # lcs: animal
    assert wu_palmer(tree, DOG, SUN) == 0.0  # another root
    assert related(tree, ANIMAL, PUPPY) and related(tree, PUPPY, ANIMAL)
    assert not related(tree, DOG, SLED_DOG) and not related(tree, TOOL, DOG)
    s = score_names(np.array([DOG, ANIMAL, TOOL, -1]), np.array([DOG, DOG, DOG, DOG]), tree)
    assert s["exact"] == 0.25 and s["related"] == 0.5 and s["names_off_tree"] == 1
    assert s["wu_palmer"] == pytest.approx((1 + 2 * 3 / (3 + 4) + 2 * 1 / (3 + 4) + 0) / 4)
    assert wu_palmer(tree, ENTITY, DOG) == pytest.approx(2 / 5)
    skipped = score_names(np.empty(0), np.empty(0), None, ["3", "4"], ["3", "5"])
    assert skipped["exact"] == 0.5 and "skipped" in skipped["tree"]


def test_wordnet_names_are_unique_lemmas():
    tree = load_tree()
    names = synset_names(tree)
    assert len(set(names)) == tree.num_nodes
    vocab = build_vocabulary("wordnet", None, tree)
    assert len(vocab) == tree.num_nodes and vocab.on_tree
    i = tree.node("n02084071")  # dog, domestic dog, Canis familiaris
    assert vocab.names[i] == "dog" and vocab.texts[i].startswith("dog, domestic dog")


# --- a real run, named -------------------------------------------------------------------------


def chosen_classes() -> list[int]:
    """Eight tree classes: a parent and two of its children, and five others far apart."""
    tree = load_tree()
    parent = np.asarray(tree.class_parent)
    kids = np.flatnonzero(parent == tree.node("n02084071"))[:2]  # two kinds of dog
    others = [tree.node(w) for w in ("n02084071", "n07739125", "n03791053", "n04379243")]
    return [*others, *kids.tolist(), tree.node("n01503061"), tree.node("n11669921")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A labelled store of 8 tree classes (classes.txt: wnids), a k-means run on it, and text
    embeddings that know the class centres: every other tree node a random direction."""
    root = tmp_path_factory.mktemp("naming")
    tree = load_tree()
    classes = chosen_classes()
    rng = np.random.default_rng(0)
    text = rng.standard_normal((tree.num_nodes, DIM)).astype(np.float32)
    centres = text[classes] / np.linalg.norm(text[classes], axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(classes)), PER_CLASS)
    train = centres[labels] + 0.05 * rng.standard_normal((labels.size, DIM))
    val_labels = np.arange(len(classes))
    val = centres[val_labels] + 0.05 * rng.standard_normal((val_labels.size, DIM))
    store = write_store(root / "store", train.astype(np.float32), labels,
                        val.astype(np.float32), val_labels, [tree.wnids[c] for c in classes])  # fmt: skip
    cfg = compose_config(
        root,
        [f"paths.root_dir={root}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", "method=kmeans", "method.nredo=10", "label_free.knn_consistency=false",
         "label_free.silhouette=false", "label_free.generalisation=false"],
    )  # fmt: skip
    run(cfg, root / "run", QUIET)
    nodes = root / "nodes.npz"  # every tree node, with its wnid
    np.savez(nodes, vectors=text, wnids=np.array(tree.wnids, dtype=str))
    classes_npy = root / "classes.npy"  # the zero-shot format: the 10450 classes in tree order
    np.save(classes_npy, text[: tree.num_classes])
    (root / "classes.npy.classes.txt").write_text("\n".join(tree.class_wnids) + "\n")
    return {"root": root, "store": store, "run": root / "run", "classes": classes,
            "nodes": nodes, "classes_npy": classes_npy, "text": text}  # fmt: skip


def name_run(world, tmp_path: Path, *overrides: str, run_dir: Path | None = None) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"run_dir={run_dir or world['run']}", f"paths.root_dir={tmp_path}", "device=cpu",
         f"naming.out={tmp_path / 'naming'}", *overrides],
        name="name",
    )  # fmt: skip
    return run_naming(cfg, tmp_path, QUIET)


def test_wordnet_names_of_a_kmeans_run(world, tmp_path, single_thread):
    result = name_run(world, tmp_path, f"zeroshot.text_embeddings={world['nodes']}",
                      "naming.chunk_names=1000", "naming.chunk_rows=64")  # fmt: skip
    table = pq.read_table(tmp_path / "naming" / "names.parquet")
    assert table.column_names == ["cluster", "name", "top_names", "top_shares", "size"]
    names = table.to_pandas()
    tree = load_tree()
    expected = {synset_names(tree)[c] for c in world["classes"]}
    assert set(names["name"]) == expected and names["name"].is_unique
    assert names["cluster"].tolist() == list(range(8)) and names["size"].sum() == 8 * PER_CLASS
    assert all(
        len(t) <= 3 and t[0] == n for t, n in zip(names["top_names"], names["name"], strict=True)
    )
    assert all(s[0] > 0.9 for s in names["top_shares"])
    s = result["scores"]
    assert s == {"clusters_scored": 8, "exact": 1.0, "related": 1.0, "wu_palmer": 1.0,
                 "names_off_tree": 0}  # fmt: skip
    saved = json.loads((tmp_path / "naming" / "results.json").read_text())
    assert saved["vocabulary"]["size"] == tree.num_nodes and saved["clusters"]["fallback"] == 0
    assert set(saved["timings"]) >= {"load_s", "text_s", "vote_s", "assign_s", "total_s"}


def test_classes_vocabulary_from_the_zeroshot_file_format(world, tmp_path, single_thread):
    result = name_run(world, tmp_path, "naming.vocabulary=classes",
                      f"zeroshot.text_embeddings={world['classes_npy']}")  # fmt: skip
    assert result["vocabulary"]["size"] == 8 and result["scores"]["exact"] == 1.0
    # wordnet with the 10450-class file: the vocabulary is the classes the file covers.
    result = name_run(world, tmp_path, f"zeroshot.text_embeddings={world['classes_npy']}")
    assert result["vocabulary"]["size"] == load_tree().num_classes
    assert result["scores"]["wu_palmer"] == 1.0


def test_a_user_file_whose_names_share_a_winner_still_gets_unique_names(world, tmp_path):
    tree = load_tree()
    names = [synset_names(tree)[c] for c in world["classes"][:4]] + ["thing"]
    vocab = tmp_path / "names.txt"
    vocab.write_text("\n".join(names) + "\n")
    # "thing" is what the last four classes look like most, the others only what they are.
    text = np.concatenate([world["text"][world["classes"][:4]],
                           world["text"][world["classes"][4:]].sum(0, keepdims=True)])  # fmt: skip
    file = tmp_path / "text.npz"
    np.savez(file, vectors=text, wnids=np.array(names, dtype=str))
    result = name_run(world, tmp_path, f"naming.vocabulary={vocab}",
                      f"zeroshot.text_embeddings={file}")  # fmt: skip
    table = pd.read_parquet(tmp_path / "naming" / "names.parquet")
    assert table["name"].is_unique
    assert set(names[:4]) <= set(table["name"])
    assert (table["name"] == "thing").sum() == 1  # one cluster wins it, the others fall back
    fallback = table[table["name"].str.contains(" #")]
    assert len(fallback) == result["clusters"]["fallback"] >= 2
    for row in fallback.itertuples():  # its best name, with its cluster id
        assert row.name == f"{row.top_names[0]} #{row.cluster}"
    off_tree = sum(t[0] == "thing" for t in table["top_names"])  # "thing" is no synset
    assert result["scores"]["names_off_tree"] == off_tree >= 3


def test_classes_off_the_tree_are_scored_by_exact_match_only(world, tmp_path, single_thread):
    store = tmp_path / "digits_like"
    shutil.copytree(world["store"], store)
    (store / "classes.txt").write_text("".join(f"{i}\n" for i in range(8)))
    root = tmp_path / "r"
    cfg = compose_config(
        root,
        [f"paths.root_dir={root}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", "method=kmeans", "method.nredo=10", "label_free.knn_consistency=false",
         "label_free.silhouette=false", "label_free.generalisation=false"],
    )  # fmt: skip
    run(cfg, tmp_path / "run", QUIET)
    file = tmp_path / "text.npz"
    text = world["text"][world["classes"]]
    np.savez(file, vectors=text, wnids=np.array([str(i) for i in range(8)]))
    result = name_run(world, tmp_path, "naming.vocabulary=classes",
                      f"zeroshot.text_embeddings={file}", run_dir=tmp_path / "run")  # fmt: skip
    assert result["scores"]["exact"] == 1.0 and "skipped" in result["scores"]["tree"]
    assert "wu_palmer" not in result["scores"]


def test_a_row_aligned_store_votes_instead(world, tmp_path, single_thread):
    other = tmp_path / "clip"
    shutil.copytree(world["store"], other)
    result = name_run(world, tmp_path, f"naming.store={other}",
                      f"zeroshot.text_embeddings={world['nodes']}")  # fmt: skip
    assert result["image_features"] == str(other) and result["scores"]["exact"] == 1.0


TINY_CLIP = (  # a random-init open_clip model: its text tower embeds the names offline
    "extractor.model_kwargs={embed_dim:32,vision_cfg:{image_size:32,layers:1,width:64,"
    "head_width:32,patch_size:16},text_cfg:{context_length:77,vocab_size:49408,width:32,heads:2,"
    "layers:1}}"
)


def test_the_text_tower_embeds_the_names(world, tmp_path, single_thread):
    clip = ["extractor=open_clip", "extractor.arch=ViT-B-32", TINY_CLIP,
            f"paths.cache_dir={tmp_path / 'cache'}", "naming.vocabulary=classes"]  # fmt: skip
    result = name_run(world, tmp_path, *clip)
    info = result["vocabulary"]["text_embeddings"]
    assert info["source"].startswith("open_clip ViT-B-32") and info["lemma"] == "first"
    names = pd.read_parquet(tmp_path / "naming" / "names.parquet")["name"]
    assert names.is_unique and len(names) == 8
    shutil.rmtree(tmp_path / "naming")
    with pytest.raises(ClusterbenchError, match="zeroshot.lemma=majority"):
        name_run(world, tmp_path, *clip, "zeroshot.lemma=majority")
    assert not (tmp_path / "naming").exists()


# --- bad input: one line, nothing written ------------------------------------------------------


def test_bad_inputs_are_refused_before_anything_is_written(world, tmp_path, single_thread):
    def refused(match: str, *overrides: str, run_dir: Path | None = None) -> None:
        with pytest.raises(ClusterbenchError, match=match):
            name_run(world, tmp_path, *overrides, run_dir=run_dir)
        assert not (tmp_path / "naming").exists()

    text = f"zeroshot.text_embeddings={world['nodes']}"
    bare = tmp_path / "bare"
    shutil.copytree(world["run"], bare, ignore=shutil.ignore_patterns("assignments"))
    refused("has no assignments/train.parquet", text, run_dir=bare)
    refused("holds no results.json", text, run_dir=world["root"])
    short = tmp_path / "short"
    rows = np.load(world["store"] / "train.npy")
    write_store(
        short, rows[:-1], np.zeros(len(rows) - 1, np.int64), rows[:8], np.zeros(8, np.int64)
    )
    refused(r"has 319 train rows but the clustered store .* has 320", text,
            f"naming.store={short}")  # fmt: skip
    for content, match in (("dog\ncat\ndog\n", "line 3 repeats 'dog' .first on line 1"),
                           ("dog\n\ncat\n", "line 2 is empty")):  # fmt: skip
        vocab = tmp_path / "v.txt"
        vocab.write_text(content)
        refused(match, text, f"naming.vocabulary={vocab}")
    wide = tmp_path / "wide.npz"
    tree = load_tree()
    np.savez(wide, vectors=np.ones((tree.num_nodes, DIM + 1), np.float32),
             wnids=np.array(tree.wnids, dtype=str))  # fmt: skip
    refused(r"image features have dimension 32 but the class text embeddings .* have 33",
            f"zeroshot.text_embeddings={wide}")  # fmt: skip
    refused("naming.vocabulary='birds'", text, "naming.vocabulary=birds")


def test_the_command_takes_the_run_dir_first_and_fails_in_one_line(world, tmp_path):
    out = tmp_path / "out"
    ok = run_module("clusterbench", "name", str(world["run"]), f"naming.out={out}",
                    f"zeroshot.text_embeddings={world['nodes']}", "device=cpu",
                    f"paths.root_dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "exact 1.000" in ok.stdout and (out / "names.parquet").is_file()
    bad = run_module("clusterbench", "name", str(tmp_path / "nowhere"), f"naming.out={out}2",
                     f"paths.root_dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: run_dir=") and not Path(f"{out}2").exists()
