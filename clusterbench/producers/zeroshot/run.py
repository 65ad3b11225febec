"""One zero-shot run (`clusterbench zeroshot`): CLIP zero-shot classification of a benchmark view's val (or train) split on its precomputed
features; writes results.json (accuracy, mean confidence, ECE), the reliability diagram, the
confidence histogram and predictions.npz. Config: conf/zeroshot.yaml.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from torchmetrics.functional.classification import binary_calibration_error

from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.core.atomic import atomic_file
from clusterbench.core.config import plain
from clusterbench.core.errors import ConfigError
from clusterbench.data.spaces import build_view
from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.metrics import ECE_BINS, reliability
from clusterbench.evaluation.plots import confidence_histogram, reliability_diagram
from clusterbench.producers.zeroshot.classify import candidate_groups, classify
from clusterbench.producers.zeroshot.embeddings import check_dims, class_embeddings
from clusterbench.results import ZEROSHOT, RunResult, print_metrics, start_run


def view_class_ids(view: BenchmarkView, tree: Tree) -> np.ndarray:
    """(V,) tree class id of each view class (its class name is a wnid)."""
    if not view.class_names:
        raise ConfigError(
            f"dataset {view.name} names no classes; zero-shot needs ImageNet-21K wnids "
            "(classes.txt) to find each class's text embedding"
        )
    ids = []
    for wnid in view.class_names:
        try:
            node = tree.node(wnid)
        except KeyError:
            node = -1
        if not tree.is_class(node):
            raise ConfigError(
                f"dataset {view.name}: class {wnid} is not one of the {tree.num_classes} "
                "ImageNet-21K classes, so it has no class text embedding"
            )
        ids.append(node)
    return np.array(ids, dtype=np.int64)


def run_zeroshot(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict:
    """Zero-shot classify one split of the configured view; return the results payload."""
    console = console or Console()
    seed = start_run(cfg)
    zcfg = plain(cfg.zeroshot)
    split, mode = str(zcfg.get("split", "val")), str(zcfg.get("candidates", "all"))
    if split not in ("train", "val"):
        raise ConfigError(f"zeroshot.split={split!r}: expected train or val")
    start = time.perf_counter()
    tree = load_tree()
    view: BenchmarkView = build_view(cfg.dataset)
    view.store.require_labels("zeroshot")  # it scores the classes it is told
    ids = view_class_ids(view, tree)
    groups = candidate_groups(tree, ids, mode)  # bad candidates fail before any text work
    emb = class_embeddings(
        zcfg,
        plain(cfg.extractor),
        view.store.meta,
        tree.class_wnids,
        lemma_data=lambda: (view.train, ids[view.train_labels]),
        cache_dir=cfg.paths.cache_dir,
        device=str(cfg.device),
        needed=ids,
    )
    check_dims(view.dim, emb, emb.info.get("source", "text tower"))
    rows = view.val if split == "val" else view.train
    labels = np.asarray(view.val_labels if split == "val" else view.train_labels)
    t0 = time.perf_counter()
    pred, conf = classify(
        rows,
        labels,
        emb.vectors[ids],
        groups,
        emb.logit_scale,
        device=str(cfg.device),
        chunk_rows=zcfg.get("chunk_rows"),
        outer=np.asarray(tree.depth)[ids] if mode == "siblings" else None,
    )
    classify_s = time.perf_counter() - t0
    correct = pred == labels
    metrics = {
        "acc": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": float(
            binary_calibration_error(
                torch.from_numpy(conf.astype(np.float64)),
                torch.from_numpy(correct.astype(np.int64)),
                n_bins=ECE_BINS,
                norm="l1",
            )
        ),
        "num_classes": int(view.num_classes),
    }
    bins = reliability(conf.astype(np.float64), correct)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = f"CLIP zero-shot ({mode}) on {view.name}"
    with atomic_file(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, predicted=pred, predicted_class_id=ids[pred], labels=labels, confidence=conf)
    artefacts = {
        "reliability_png": reliability_diagram(
            bins, metrics["ece"], run_dir / "reliability.png", title
        ).name,
        "confidence_png": confidence_histogram(conf, run_dir / "confidence_hist.png", title).name,
        "predictions": "predictions.npz",
    }
    payload = RunResult(
        method=ZEROSHOT,
        dataset=view.name,
        seed=seed,
        metrics=metrics,
        reliability=bins,
        method_info={
            "candidates": mode,
            "split": split,
            "logit_scale": emb.logit_scale,
            "class_embeddings": emb.info,
            "samples_per_s": round(labels.size / max(classify_s, 1e-9), 1),
        },
        dataset_summary=view.summary(),
        timings={"classify_s": classify_s},
        started=start,
        artefacts=artefacts,
        config=cfg,
    ).write(run_dir)
    print_metrics(metrics, f"{title} ({split}, {labels.size:,} samples)", console)
    console.print(f"results: {run_dir / 'results.json'}")
    return payload
