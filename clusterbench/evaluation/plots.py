"""Calibration figures of the paper (Figures 3 and 8): reliability diagram and confidence histogram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def reliability_diagram(reliability: dict, ece: float, path: Path, title: str) -> Path:
    edges = np.asarray(reliability["bin_edges"])
    acc, conf = np.asarray(reliability["accuracy"]), np.asarray(reliability["confidence"])
    used = np.asarray(reliability["count"]) > 0
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.bar(centres[used], acc[used], width=width[used], edgecolor="black", label="accuracy")
    # The gap runs from a bin's accuracy to its mean confidence, up or down.
    ax.bar(
        centres[used],
        conf[used] - acc[used],
        bottom=acc[used],
        width=width[used],
        fill=False,
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{title}\nECE = {100 * ece:.2f} %",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def confidence_histogram(confidence: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.hist(
        confidence,
        bins=30,
        range=(0, 1),
        weights=np.full(len(confidence), 1 / max(len(confidence), 1)),
    )
    ax.axvline(
        float(np.mean(confidence)), color="k", ls="--", label=f"mean {np.mean(confidence):.3f}"
    )
    ax.set(xlabel="max softmax probability", ylabel="fraction of samples", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
