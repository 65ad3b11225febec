"""Evaluation against multi-label ground truth (ImageNet-1K ReaL, section 4.4 of the paper):
the Hungarian mapping is estimated from the top-1 predictions against one label drawn at
random from each sample's set S_L, with that mapping and label scored as usual; the draw is
repeated and the metrics averaged (their std reported beside the accuracies)."""

from __future__ import annotations

import numpy as np

from clusterbench.data.view import LabelSets
from clusterbench.evaluation.metrics import evaluate
from clusterbench.evaluation.predictions import Predictions

ACCURACIES = ("acc", "top5_acc", "top1_L_acc", "top5_L_acc", "nmi", "ari")


def sample_labels(sets: LabelSets, rng: np.random.Generator) -> np.ndarray:
    """(N,) one label drawn uniformly from each sample's set (every set must be non-empty)."""
    sizes = np.diff(sets.indptr)
    if (sizes == 0).any():
        raise ValueError(f"{int((sizes == 0).sum())} label sets are empty; exclude them first")
    pick = np.floor(rng.random(sizes.size) * sizes).astype(np.int64)
    return sets.indices[sets.indptr[:-1] + pick]


def evaluate_real(
    predictions: Predictions,
    label_sets: LabelSets,
    num_classes: int,
    repeats: int = 50,
    seed: int = 0,
) -> dict:
    """`metrics.evaluate` averaged over `repeats` random single-label draws from S_L.

    Same shape as `evaluate`'s result: metrics (means, plus `<metric>_std` for the accuracies
    and `real_repeats`) and, when predictions carry confidences, the reliability bins with
    per-bin accuracy averaged over the draws.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    runs = [
        evaluate(predictions, sample_labels(label_sets, rng), num_classes, label_sets)
        for _ in range(repeats)
    ]
    metrics: dict = {}
    for key, first in runs[0]["metrics"].items():
        values = np.array([r["metrics"][key] for r in runs], dtype=np.float64)
        metrics[key] = float(values.mean()) if isinstance(first, float) else first
        if key in ACCURACIES:
            metrics[f"{key}_std"] = float(values.std())
    metrics["real_repeats"] = int(repeats)
    out: dict = {"metrics": metrics}
    if "reliability" in runs[0]:
        rel = dict(runs[0]["reliability"])
        rel["accuracy"] = np.mean([r["reliability"]["accuracy"] for r in runs], axis=0).tolist()
        out["reliability"] = rel
    return out
