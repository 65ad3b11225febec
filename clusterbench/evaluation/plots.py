"""The run's figures: the calibration plots of the paper (Figures 3 and 8: reliability diagram,
confidence histogram) and the score curve of a K estimate."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
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


def k_estimation_curve(estimate: dict, levels: dict[str, int], path: Path, title: str) -> Path:
    """The criterion against K (log axis), the chosen K, and every level of classes known."""
    ks = np.asarray(estimate["candidates"], dtype=np.float64)
    scores = np.asarray([np.nan if s is None else s for s in estimate["scores"]])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, scores, marker="o", markersize=3, label=estimate["criterion"])
    ax.axvline(estimate["k"], color="tab:red", label=f"estimate K = {estimate['k']}")
    for (name, k), style in zip(levels.items(), ("--", ":", "-."), strict=False):
        ax.axvline(k, color="gray", linestyle=style, label=f"{name}: {k}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel(estimate["criterion"])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
