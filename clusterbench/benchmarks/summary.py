"""What a benchmark looks like: sizes, class-frequency statistics, label provenance."""

from __future__ import annotations

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.data.view import BenchmarkView


def describe(view: BenchmarkView) -> dict:
    """`BenchmarkView.summary` plus the benchmark's family and label provenance, JSON-able.

    Class frequencies count train samples per class of the label space; min/median/max and
    the imbalance ratio (max/min) cover classes with at least one sample. For ImageNet-21K
    views, `non_dataset_synset_fraction` is the share of labels that are WordNet synsets
    outside the 10450 classes (coarse benchmarks create them), and
    `non_dataset_synset_sample_fraction` the share of train samples carrying one.
    """
    counts = np.bincount(view.train_labels, minlength=view.num_classes)
    out = {
        **view.summary(),  # sizes and train class-frequency statistics
        "family": view.params.get("family"),
        "classes_without_train_samples": int((counts == 0).sum()),
        "non_dataset_synset_fraction": 0.0,
        "non_dataset_synset_sample_fraction": 0.0,
        "mean_label_set_size": None,
    }
    if view.params.get("family") == "in21k" and view.class_names is not None:
        outside = ~np.isin(np.array(view.class_names), np.array(load_tree().class_wnids))
        out["non_dataset_synset_fraction"] = float(outside.mean()) if outside.size else 0.0
        if len(view.train_labels):
            out["non_dataset_synset_sample_fraction"] = float(outside[view.train_labels].mean())
    if view.val_label_sets is not None and len(view.val_label_sets):
        out["mean_label_set_size"] = float(np.diff(view.val_label_sets.indptr).mean())
    return out


def render(info: dict) -> str:
    """Human-readable lines for `describe`'s dict."""
    f = info["train_class_frequency"]
    lines = [
        f"benchmark        {info['name']} ({info['family']})",
        f"base store       {info['store']}",
        f"classes          {info['num_classes']:,}",
        f"train / val      {info['num_train']:,} / {info['num_val']:,}  (dim {info['dim']})",
        f"train per class  min {f['min']:,}  median {f['median']:,.1f}  max {f['max']:,}  "
        f"(imbalance {info['imbalance_ratio']:.2f})",
    ]
    if info["classes_without_train_samples"]:
        lines.append(
            f"empty classes    {info['classes_without_train_samples']:,} (no train sample)"
        )
    if info["family"] == "in21k":
        lines.append(
            f"non-class labels {100 * info['non_dataset_synset_fraction']:.2f}% of classes, "
            f"{100 * info['non_dataset_synset_sample_fraction']:.2f}% of train samples"
        )
    if info["mean_label_set_size"] is not None:
        lines.append(f"label sets       {info['mean_label_set_size']:.2f} labels per val sample")
    return "\n".join(lines)
