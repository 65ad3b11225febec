"""Hierarchical zero-shot label refining: the descent on hand-made trees, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.data.rows import FeatureRows
from clusterbench.producers.zeroshot.refine import refine
from tests.helpers.cli import run_module
from tests.helpers.compose import compose_hzr
from tests.helpers.synthetic import SMALL_IN21K, in21k_like_store, synthetic_embeddings
from tests.helpers.tree import ANIMAL, DOG, ORGANISM, PUPPY, SLED_DOG, SUN, TOOL

E = np.eye(7, dtype=np.float32)


def _refine(tree: Tree, x, labels, emb, mode: str, **kw):
    rows = FeatureRows(np.asarray(x, dtype=np.float32))
    return refine(rows, np.asarray(labels), emb, tree, mode, device="cpu", **kw)


def test_leaf_descends_to_a_leaf_through_a_chain_of_single_children(tree, single_thread):
    # organism -> animal is a single child: taken whatever the similarity; then dog beats
    # sled dog, then dog -> puppy (single child again).
    x = [E[PUPPY] + 0.5 * E[DOG], E[SLED_DOG], E[SUN], E[PUPPY], E[TOOL]]
    labels = [ORGANISM, ANIMAL, SUN, PUPPY, TOOL]
    new, steps = _refine(tree, x, labels, E, "leaf")
    assert new.tolist() == [PUPPY, SLED_DOG, SUN, PUPPY, TOOL]
    assert steps.tolist() == [3, 1, 0, 0, 0]  # classes without children never move


def test_parent_mode_stops_where_the_current_class_wins(tree, single_thread):
    x = [E[ANIMAL] + 0.1 * E[DOG], E[DOG] + 0.2 * E[ANIMAL] + 0.1 * E[ORGANISM], E[DOG]]
    labels = [ORGANISM, ORGANISM, DOG]
    new, _ = _refine(tree, x, labels, E, "parent")
    # 1st: organism loses to animal, animal beats dog -> animal. 2nd: animal (0.2) beats
    # organism (0.1), dog (1) beats animal, puppy (0) loses to dog -> dog. 3rd: dog beats puppy.
    assert new.tolist() == [ANIMAL, DOG, DOG]
    leaf, _ = _refine(tree, x, labels, E, "leaf")
    assert leaf.tolist() == [PUPPY, PUPPY, PUPPY]


def test_ties_go_to_the_lowest_child_and_to_the_current_class_in_p_hzr(tree, single_thread):
    x = [E[ANIMAL], np.zeros(7) + 0.1]  # dog and sled dog tie; all classes tie in the 2nd
    new, _ = _refine(tree, x, [ANIMAL, ANIMAL], E, "leaf")
    assert new.tolist() == [PUPPY, PUPPY]  # dog (id 0) < sled dog (4), then dog -> puppy
    kept, steps = _refine(tree, x, [ANIMAL, ANIMAL], E, "parent")
    assert kept.tolist() == [ANIMAL, ANIMAL] and steps.tolist() == [0, 0]


def reference(tree: Tree, x: np.ndarray, label: int, emb: np.ndarray, mode: str) -> int:
    """One sample at a time, straight from the definition."""
    children = {
        c: [k for k in range(tree.num_classes) if tree.class_parent[k] == c]
        for c in range(tree.num_classes)
    }
    x = x / np.linalg.norm(x)
    cur = label
    while children[cur]:
        sims = [float(x @ emb[k]) for k in children[cur]]
        best = children[cur][int(np.argmax(sims))]
        if mode == "parent" and max(sims) <= float(x @ emb[cur]):
            break
        cur = best
    return cur


@pytest.mark.parametrize("mode", ["leaf", "parent"])
def test_vectorised_descent_matches_the_per_sample_definition(tree, mode, single_thread):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((7, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    labels = rng.integers(0, 7, 300)
    # Tiny chunks and similarity blocks: the chunked path must give the same answer.
    new, _ = _refine(tree, x, labels, emb, mode, chunk_rows=37, budget=10)
    expected = [reference(tree, x[i], int(labels[i]), emb, mode) for i in range(300)]
    assert new.tolist() == expected
    assert (new != labels).any()


# --- the command -----------------------------------------------------------------------------


@pytest.mark.slow
def test_hzr_command_on_the_synthetic_store_then_p_hzr_reads_it(tmp_path, single_thread):
    from clusterbench.benchmarks.families.relabel import relabel

    emb = synthetic_embeddings(tmp_path / "emb.npy")
    out, cache = tmp_path / "rel", tmp_path / "cache"
    small = [f"dataset.synthetic.{k}={v}" for k, v in SMALL_IN21K.items()]
    proc = run_module(
        "clusterbench.producers.zeroshot.hzr",
        "dataset.base=synthetic",
        *small,
        f"zeroshot.text_embeddings={emb}",
        f"hzr.out={out}",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "device=cpu",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "10413" in proc.stdout  # the paper's figure is printed beside ours
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "p_hzr" and (tmp_path / "run" / "hzr_summary.json").is_file()
    # The synthetic store ships the ideal p-HZR labels (the class each image really shows).
    oracle = next(cache.glob("synthetic_in21k/*/relabel/p_hzr"))
    store = oracle.parent.parent
    for split in ("train", "val"):
        ours, ideal = np.load(out / f"{split}_labels.npy"), np.load(oracle / f"{split}_labels.npy")
        gt = np.load(store / f"{split}_labels.npy")
        assert (ours == ideal).mean() > 0.97 > (gt == ideal).mean()
        assert meta["counts"][split]["relabelled"] == int((ours != gt).sum()) > 0
    kw = {"synthetic": SMALL_IN21K, "cache_dir": str(cache), "base": "synthetic"}
    view = relabel("p_hzr", relabel=str(out), **kw)
    assert view.num_classes == meta["counts"]["classes_kept"]
    assert len(view.train_labels) == 10450 - meta["counts"]["train"]["excluded"]


def test_hzr_writes_where_the_benchmark_looks_and_never_replaces_silently(tmp_path, single_thread):
    from clusterbench.benchmarks.families.relabel import relabel
    from clusterbench.core.errors import ConfigError
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, emb = in21k_like_store(tmp_path / "store")
    np.save(tmp_path / "emb.npy", emb)
    args = [
        f"dataset.base={store}",
        f"zeroshot.text_embeddings={tmp_path / 'emb.npy'}",
        "device=cpu",
    ]
    summary = run_hzr(compose_hzr(tmp_path, [*args, "hzr.mode=leaf"]), tmp_path / "run")
    assert Path(summary["relabel_dir"]) == store / "relabel" / "leaf_hzr"
    leaf = np.load(store / "relabel" / "leaf_hzr" / "train_labels.npy")
    tree = load_tree()
    has_children = np.isin(np.arange(tree.num_classes), tree.class_parent)
    assert not has_children[leaf].any()  # leaf-HZR ends at leaves only
    view = relabel("leaf_hzr", base=str(store), cache_dir=str(tmp_path / "c"))
    assert view.num_classes == summary["counts"]["classes_kept"]
    with pytest.raises(ConfigError, match="hzr.overwrite=true"):
        run_hzr(compose_hzr(tmp_path, [*args, "hzr.mode=leaf"]), tmp_path / "run")
    run_hzr(compose_hzr(tmp_path, [*args, "hzr.mode=leaf", "hzr.overwrite=true"]), tmp_path / "r2")


def test_bad_class_embedding_files_are_refused_in_one_line(tmp_path, single_thread):
    from clusterbench.core.errors import BenchmarkFileError, ConfigError
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, emb = in21k_like_store(tmp_path / "store")
    cases = {
        "shape": (
            emb[:100],
            BenchmarkFileError,
            r"expected float class embeddings of shape \(10450, D\)",
        ),
        "nan": (
            np.where(np.arange(10450)[:, None] == 7, np.nan, emb),
            BenchmarkFileError,
            "first: class 7",
        ),
        "dim": (emb[:, :4], ConfigError, "dimension 8 but the class text embeddings"),
    }
    for name, (arr, error, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr.astype(np.float32))
        cfg = compose_hzr(
            tmp_path, [f"dataset.base={store}", f"zeroshot.text_embeddings={tmp_path / name}.npy"]
        )
        with pytest.raises(error, match=message):
            run_hzr(cfg, tmp_path / "run")


@pytest.mark.slow
def test_a_store_without_a_text_tower_points_to_text_embeddings(tmp_path):
    store, _ = in21k_like_store(tmp_path / "store")
    proc = run_module(
        "clusterbench.producers.zeroshot.hzr",
        f"dataset.base={store}",
        "extractor=dino_vitb16",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error:") and "no text tower" in line and "zeroshot.text_embeddings" in line
    )


TINY_CLIP = (
    "extractor.model_kwargs={embed_dim:8,vision_cfg:{image_size:32,layers:1,width:64,head_width:32,"
    "patch_size:16},text_cfg:{context_length:77,vocab_size:49408,width:32,heads:2,layers:1}}"
)


@pytest.mark.parametrize("lemma", ["majority", "mean"])
def test_open_clip_text_tower_end_to_end_into_p_hzr(tmp_path, lemma, single_thread):
    """A random-init open_clip text tower (offline) on the real lemmas of a few classes."""
    from clusterbench.benchmarks.families.relabel import relabel
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, _ = in21k_like_store(tmp_path / "store")
    args = [
        f"dataset.base={store}",
        "extractor=open_clip",
        "extractor.arch=ViT-B-32",
        TINY_CLIP,
        f"zeroshot.lemma={lemma}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "device=cpu",
    ]
    summary = run_hzr(compose_hzr(tmp_path, args), tmp_path / "run")
    info = summary["class_embeddings"]
    assert info["lemma"] == lemma and not info["text_from_cache"]
    assert 0 < info["classes_embedded"] < info["num_lemmas"]  # several lemmas per class
    view = relabel("p_hzr", base=str(store), cache_dir=str(tmp_path / "c"))
    assert view.num_classes == summary["counts"]["classes_kept"] > 0
    again = run_hzr(compose_hzr(tmp_path, [*args, "hzr.overwrite=true"]), tmp_path / "r2")
    assert again["class_embeddings"]["text_from_cache"]  # text embedded once per model
    assert np.array_equal(
        np.load(store / "relabel" / "p_hzr" / "train_labels.npy"),
        np.load(Path(again["relabel_dir"]) / "train_labels.npy"),
    )

    # A store whose meta.json says a timm model made it, read with an open_clip extractor.
    (store / "meta.json").write_text(json.dumps({"library": "timm", "architecture": "vit_b"}))
    cfg = compose_hzr(
        tmp_path, [f"dataset.base={store}", "extractor=open_clip", "extractor.arch=ViT-B-32"]
    )
    from clusterbench.core.errors import ConfigError
    from clusterbench.producers.zeroshot.hzr import run_hzr

    with pytest.raises(ConfigError, match="timm model .*no text tower.*zeroshot.text_embeddings"):
        run_hzr(cfg, tmp_path / "run")


def test_example_grid_shows_relabelled_images(tmp_path, single_thread):
    from PIL import Image

    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, emb = in21k_like_store(tmp_path / "store")
    np.save(tmp_path / "emb.npy", emb)
    n = len(np.load(store / "train_labels.npy"))
    (tmp_path / "img").mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i % 255, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    (store / "train_files.txt").write_text("".join(f"{i}.png\n" for i in range(n)))
    (store / "meta.json").write_text(json.dumps({"images": {"root": str(tmp_path / "img")}}))
    args = [f"dataset.base={store}", f"zeroshot.text_embeddings={tmp_path / 'emb.npy'}"]
    summary = run_hzr(
        compose_hzr(tmp_path, [*args, "hzr.mode=leaf", "hzr.examples=4", "device=cpu"]),
        tmp_path / "run",
    )
    assert Path(summary["examples_png"]).stat().st_size > 0
    (tmp_path / "img" / "0.png").unlink()
    for i in range(1, n):
        (tmp_path / "img" / f"{i}.png").write_text("not an image")
    again = run_hzr(
        compose_hzr(
            tmp_path, [*args, "hzr.mode=leaf", "hzr.examples=4", "hzr.overwrite=true", "device=cpu"]
        ),
        tmp_path / "r2",
    )
    assert again["examples_png"] is None  # unreadable images skip the figure, not the run
