"""`refine=self_label`: a self-labelling stage after any method (SCAN's self-label step, Van
Gansbeke et al., ECCV 2020; the consensus of heads as in the ICCE 2025 recipe).

After the method has predicted, the train rows whose assignment is confident are kept, a linear
classifier is trained on them with their clusters as labels, and every row (train and val) is
predicted again by it. Confident rows:

- `select: consensus` (what `auto` picks for TEMI / SCANv2, whose teacher trains H heads): the
  rows on which the top `consensus_heads` heads (the method's own ranking: the predicting head
  first, then the others by their last epoch's loss) agree, after each head's cluster ids are
  matched to the predicting head's (Hungarian on their contingency table);
- `select: quantile` (what `auto` picks for every other method: k-means, FINCH, any object with
  `assign(rows)` yielding `Assigned`): the top `quantile` fraction of each cluster's rows by the
  method's own confidence (max softmax probability, or cosine to the nearest centroid), or of
  all rows with `per_cluster: false`;
- `select: threshold`: confidence above `threshold` (SCAN's rule, 0.99 on the softmax).

The classifier: one linear layer (`methods/linear.py`) on standardised features, SGD with
momentum and cosine decay, cross-entropy with label smoothing and SCAN's class balancing;
batches are gathered from the (memory-mapped) rows, never all rows at once.

The collapse guard: a cluster is lost when it holds train rows before the refinement and none
after. When more than `max_lost_fraction` of the non-empty clusters are lost, the unrefined
prediction is kept, and `method_info.refine` records the decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterbench.core.device import torch_device
from clusterbench.core.errors import ConfigError
from clusterbench.data.normalize import NORMALIZATIONS
from clusterbench.data.rows import Rows
from clusterbench.evaluation.evaluate import evaluate_view
from clusterbench.evaluation.metrics import hungarian_mapping
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.refine.classifier import SelfLabelClassifier, train_classifier
from clusterbench.refine.selection import consensus_rows, quantile_rows, threshold_rows

SELECTIONS = ("auto", "consensus", "quantile", "threshold")
MODEL_FILE = "self_label.pt"


class SelfLabelled:
    """A method whose predictions the self-label classifier replaced: `assign(rows)` streams
    the classifier's clusters; `save` keeps the method's own model and the classifier's."""

    def __init__(self, method: Any, classifier: SelfLabelClassifier, topk: int) -> None:
        self.method, self.classifier, self.topk = method, classifier, topk
        self.name = getattr(method, "name", "refined")
        if hasattr(method, "label_free"):  # method-specific scores, e.g. the heads' agreement
            self.label_free = method.label_free

    def assign(self, rows) -> Iterator[Assigned]:
        return self.classifier.assign(rows, self.topk)

    def save(self, run_dir: Path) -> str:
        self.classifier.save(Path(run_dir) / MODEL_FILE)
        return self.method.save(run_dir) if hasattr(self.method, "save") else MODEL_FILE


def train_assignments(method: Any, rows: Rows) -> tuple[np.ndarray, np.ndarray | None]:
    """The method's own train clusters (top-1) and confidence, as the run exports them:
    FINCH's own partition (`train_assigned`, no confidence: the cosine to the nearest level-0
    mean from `assign` stands in), else `assign(rows)`."""
    n = len(rows)
    top1 = np.empty(n, dtype=np.int64)
    confidence: np.ndarray | None = np.empty(n, dtype=np.float32)
    own = hasattr(method, "train_assigned")
    for part in method.train_assigned() if own else method.assign(rows):
        top1[part.start : part.start + len(part)] = part.topk[:, 0]
        if part.confidence is None:
            confidence = None
        elif confidence is not None:
            confidence[part.start : part.start + len(part)] = part.confidence
    if confidence is None and own:
        confidence = np.empty(n, dtype=np.float32)
        for part in method.assign(rows):
            if part.confidence is None:
                return top1, None
            confidence[part.start : part.start + len(part)] = part.confidence
    return top1, confidence


class SelfLabel:
    """`refine: self_label` (conf/refine/self_label.yaml): settings, checked on creation, and
    `refine(method, predictions, evaluation, task)` that the run calls after the method."""

    def __init__(
        self,
        select: str = "auto",
        quantile: float = 0.5,
        per_cluster: bool = True,
        threshold: float = 0.99,
        consensus_heads: int = 5,
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.1,
        class_balance: bool = True,
        normalize: str = "standardize",
        max_lost_fraction: float = 0.1,
        topk: int = 5,
        chunk_size: int = 65536,
    ) -> None:
        if select not in SELECTIONS:
            raise ConfigError(f"refine.select={select!r}: expected one of {SELECTIONS}")
        if not 0 < quantile <= 1:
            raise ConfigError(
                f"refine.quantile={quantile}: expected a fraction of rows to keep in (0, 1]"
            )
        if not 0 <= threshold < 1:
            raise ConfigError(f"refine.threshold={threshold}: expected a confidence in [0, 1)")
        if consensus_heads < 2:
            raise ConfigError(
                f"refine.consensus_heads={consensus_heads}: expected >= 2 heads to agree"
            )
        if epochs < 1:
            raise ConfigError(f"refine.epochs={epochs}: expected at least 1 epoch")
        if batch_size < 1 or topk < 1 or chunk_size < 1:
            raise ConfigError(
                f"refine.batch_size={batch_size}, refine.topk={topk}, "
                f"refine.chunk_size={chunk_size}: expected each >= 1"
            )
        if lr <= 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ConfigError(
                f"refine.lr={lr}, refine.weight_decay={weight_decay}, refine.momentum={momentum}:"
                " expected lr > 0, weight_decay >= 0, momentum in [0, 1)"
            )
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"refine.label_smoothing={label_smoothing}: expected [0, 1)")
        if not 0 <= max_lost_fraction <= 1:
            raise ConfigError(f"refine.max_lost_fraction={max_lost_fraction}: expected [0, 1]")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"refine.normalize={normalize!r}: expected one of {NORMALIZATIONS}")
        self.select, self.quantile, self.per_cluster = select, float(quantile), per_cluster
        self.threshold, self.consensus_heads = float(threshold), int(consensus_heads)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.label_smoothing, self.class_balance = float(label_smoothing), class_balance
        self.normalize, self.max_lost_fraction = normalize, float(max_lost_fraction)
        self.topk, self.chunk_size = int(topk), int(chunk_size)

    def settings(self) -> dict:
        return dict(vars(self))

    def rule(self, method: Any) -> str:
        """The selection this method gets: `auto` is consensus where the method ranks two or
        more heads, else quantile."""
        heads = len(method.head_ranking()) if hasattr(method, "head_ranking") else 0
        if self.select == "consensus" and heads < 2:
            raise ConfigError(
                f"refine.select=consensus: method {method.name} has {heads or 'no'} head(s) to "
                "agree; use refine.select=quantile or threshold"
            )
        if self.select == "auto":
            return "consensus" if heads >= 2 else "quantile"
        return self.select

    def confident(self, method: Any, rows: Rows, top1: np.ndarray,
                  confidence: np.ndarray | None) -> tuple[np.ndarray, dict]:  # fmt: skip
        """(N,) bool of the kept train rows and how they were chosen."""
        rule = self.rule(method)
        if rule == "consensus":
            heads = method.head_ranking()[: self.consensus_heads]
            return consensus_rows(method.heads_top1(rows, heads)), {"rule": rule, "heads": heads}
        if confidence is None:
            raise ConfigError(
                f"refine.select={self.select}: method {method.name} gives no confidence to "
                "rank its rows by"
            )
        if rule == "threshold":
            return threshold_rows(confidence, self.threshold), {
                "rule": rule, "threshold": self.threshold}  # fmt: skip
        return quantile_rows(top1, confidence, self.quantile, self.per_cluster), {
            "rule": rule, "quantile": self.quantile, "per_cluster": self.per_cluster}  # fmt: skip

    def refine(
        self, method: Any, predictions: Predictions, evaluation: dict, task: Any
    ) -> tuple[Any, Predictions, dict]:
        """The method, its val predictions and their evaluation after self-labelling, or the
        ones given where the guard rejects the refinement; `task.info["refine"]` records both."""
        started = time.perf_counter()
        view, k = task.view, int(predictions.num_clusters)
        train = view.train
        top1, confidence = train_assignments(method, train)
        kept, how = self.confident(method, train, top1, confidence)
        if not kept.any():
            described = ", ".join(f"{key}={value}" for key, value in how.items())
            raise ConfigError(
                f"refine: the confident-row rule ({described}) keeps none of the "
                f"{len(top1):,} train rows of {method.name}; expected at least one: lower "
                "refine.threshold, raise refine.quantile, or use refine.select=quantile"
            )
        index = np.flatnonzero(kept)
        device = torch_device(str(task.device))
        torch.manual_seed(task.seed)
        classifier, losses = train_classifier(train, index, top1[index], k, self, device, task.seed)
        refined = np.empty_like(top1)
        for part in classifier.assign(train, 1, self.chunk_size):
            refined[part.start : part.start + len(part)] = part.topk[:, 0]
        before = np.bincount(top1, minlength=k) > 0
        after = np.bincount(refined, minlength=k) > 0
        lost = int((before & ~after).sum())
        accepted = lost <= self.max_lost_fraction * int(before.sum())
        after_predictions = classifier.predict(view.val, self.topk, self.chunk_size)
        labelled = view.labelled and len(view.val)
        after_evaluation = evaluate_view(after_predictions, view) if labelled else {}
        metrics_after = after_evaluation.get("metrics", {"num_clusters": k})
        record = {
            "settings": self.settings(),
            "selection": how,
            "rows": int(len(top1)),
            "rows_kept": int(index.size),
            "kept_fraction": float(index.size / len(top1)),
            "clusters_kept": int(np.unique(top1[index]).size),
            "clusters_before": int(before.sum()),
            "clusters_after": int(after.sum()),
            "clusters_lost": lost,
            "accepted": bool(accepted),
            "decision": (
                "refined"
                if accepted
                else f"unrefined kept: {lost} of {int(before.sum())} non-empty clusters lost, "
                f"over refine.max_lost_fraction={self.max_lost_fraction}"
            ),
            "train_changed_fraction": float((refined != top1).mean()),
            "epoch_losses": [round(v, 6) for v in losses],
            "metrics_before": evaluation.get("metrics", {"num_clusters": k}),
            "metrics_after": metrics_after,
            "seconds": time.perf_counter() - started,
        }
        if view.labelled:  # how right the pseudo-labels are, on kept rows and on all
            record.update(pseudo_label_acc(top1, index, view.train_labels, view.num_classes, k))
        if accepted:
            record["model"] = MODEL_FILE
        task.info["refine"] = record
        if not accepted:
            return method, predictions, evaluation
        return SelfLabelled(method, classifier, self.topk), after_predictions, after_evaluation


def pseudo_label_acc(top1: np.ndarray, kept: np.ndarray, labels: np.ndarray, num_classes: int,
                     num_clusters: int) -> dict:  # fmt: skip
    """ACC of the method's train clusters (Hungarian on all train rows) over all train rows
    and over the kept ones: what the confident-row rule gained."""
    labels = np.asarray(labels, dtype=np.int64)
    correct = hungarian_mapping(top1, labels, num_clusters, num_classes)[top1] == labels
    return {
        "pseudo_label_acc_all": float(correct.mean()),
        "pseudo_label_acc_kept": float(correct[kept].mean()),
    }
