"""CLIP zero-shot classification: candidate sets, chunked scoring and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.producers.zeroshot.classify import candidate_groups, classify
from clusterbench.producers.zeroshot.run import run_zeroshot
from clusterbench.producers.zeroshot.text import lemmas
from tests.helpers.cli import run_module
from tests.helpers.compose import compose_hzr
from tests.helpers.synthetic import SMALL_IN21K, synthetic_embeddings
from tests.helpers.tree import ANIMAL, DOG, ORGANISM, PUPPY, SLED_DOG, SUN, TOOL

ALL = np.arange(7)


def members(groups: np.ndarray, c: int) -> set[int]:
    return set(np.flatnonzero(groups == groups[c]).tolist())


def test_level_uses_the_tree_depths(tree):
    groups = candidate_groups(tree, ALL, "level")
    assert groups.tolist() == tree.depth.tolist()
    assert members(groups, DOG) == {DOG, SLED_DOG}  # both at depth 2 (via a non-class synset)
    assert members(groups, SUN) == {ORGANISM, SUN, TOOL}


def test_siblings_fall_back_to_the_level_exactly_without_a_sibling(tree):
    groups = candidate_groups(tree, ALL, "siblings")
    level = candidate_groups(tree, ALL, "level")
    for c in range(7):
        siblings = set(np.flatnonzero(tree.class_parent == tree.class_parent[c]).tolist())
        expected = siblings if len(siblings) > 1 else members(level, c)
        assert members(groups, c) == expected, c
    # animal is organism's only child and puppy dog's: both use their level
    assert members(groups, PUPPY) == {PUPPY} and members(groups, ANIMAL) == {ANIMAL}
    # Without sled dog in the view, dog has no sibling left and falls back to its level.
    sub = np.array([DOG, ORGANISM, ANIMAL, PUPPY])
    assert candidate_groups(tree, sub, "siblings")[0] != candidate_groups(tree, sub, "siblings")[3]
    with pytest.raises(ConfigError, match="zeroshot.candidates='cousins'"):
        candidate_groups(tree, ALL, "cousins")


def test_chunked_scoring_equals_the_dense_softmax(single_thread):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((9, 6)).astype(np.float32)
    x = rng.standard_normal((250, 6)).astype(np.float32)
    labels = rng.integers(0, 9, 250)
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred, conf = classify(FeatureRows(x), labels, emb, groups, 50.0, "cpu", budget=20)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    logits = 50.0 * xn @ e.T
    logits[groups[None, :] != groups[labels][:, None]] = -np.inf
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    assert pred.tolist() == prob.argmax(1).tolist()
    np.testing.assert_allclose(conf, prob.max(1), rtol=1e-4)
    assert (groups[pred] == groups[labels]).all()  # never outside the candidate set
    # Scored level by level with the other groups masked: the same answer.
    coarse = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    pred2, conf2 = classify(FeatureRows(x), labels, emb, groups, 50.0, "cpu", outer=coarse)
    assert pred2.tolist() == pred.tolist()
    np.testing.assert_allclose(conf2, conf, rtol=1e-4)


def test_lemmas_split_the_tree_names():
    assert lemmas("dog, domestic dog, Canis familiaris") == [
        "dog",
        "domestic dog",
        "Canis familiaris",
    ]
    assert lemmas("sun") == ["sun"]


@pytest.mark.slow
def test_zeroshot_command_on_the_synthetic_store(tmp_path, single_thread):
    emb = synthetic_embeddings(tmp_path / "emb.npy")
    run = tmp_path / "run"
    proc = run_module(
        "clusterbench.producers.zeroshot",
        "dataset=synthetic_in21k",
        *(f"dataset.synthetic.{k}={v}" for k, v in SMALL_IN21K.items()),
        f"zeroshot.text_embeddings={emb}",
        "zeroshot.candidates=siblings",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        "device=cpu",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "results.json").read_text())
    m = result["metrics"]
    assert 0.8 < m["acc"] <= 1 and 0 < m["mean_confidence"] <= 1 and 0 <= m["ece"] <= 1
    assert result["method_info"]["candidates"] == "siblings"
    for name in ("reliability.png", "confidence_hist.png", "predictions.npz"):
        assert (run / name).is_file()
    pred = np.load(run / "predictions.npz")
    assert pred["predicted"].shape == (10450,)
    assert np.isclose((pred["predicted"] == pred["labels"]).mean(), m["acc"])
    # In-process on the same store: all classes are harder candidates than the siblings.
    cfg = compose_hzr(
        tmp_path,
        [
            "dataset=synthetic_in21k",
            *(f"dataset.synthetic.{k}={v}" for k, v in SMALL_IN21K.items()),
            f"zeroshot.text_embeddings={emb}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "device=cpu",
        ],
        name="zeroshot",
    )
    every = run_zeroshot(cfg, tmp_path / "all")["metrics"]
    assert every["acc"] < m["acc"] and every["mean_confidence"] < m["mean_confidence"]


def test_zeroshot_needs_wnid_classes(tmp_path: Path):
    cfg = compose_hzr(tmp_path, ["dataset=synthetic", "device=cpu"], name="zeroshot")
    with pytest.raises(ConfigError, match="dataset synthetic names no classes|is not one of"):
        run_zeroshot(cfg, tmp_path / "run")
