"""Can a label-free score stand in for accuracy? The evidence, from a sweep of labelled runs.

Per score (results.json `label_free`): the Spearman rank correlation between the score and
ACC over the sweep's clustering runs (scipy.stats.spearmanr), and the run the score would pick
(its highest value) with that run's ACC beside the best and the median ACC of the same runs.
A score that tracks ACC on labelled benchmarks is one a user can trust on unlabelled data;
one that does not is named as such. A scatter figure per score shows the runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from clusterbench.report.collect import Run, differing, group, seed_stability
from clusterbench.report.tables import Table

# (results.json path under label_free, label); higher is better for each.
SCORES = (
    (("cluster_sizes", "normalized_entropy"), "size balance"),
    (("knn_consistency", "value"), "kNN consistency"),
    (("silhouette", "value"), "silhouette"),
    (("generalisation", "value"), "generalisation"),
    (("head_agreement", "value"), "head agreement"),
)
MIN_RUNS = 3


def score_of(run: Run, path: tuple[str, str]) -> float | None:
    node = run.result.get("label_free") or {}
    value = (node.get(path[0]) or {}).get(path[1])
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def selection_table(runs: list[Run]) -> Table | None:
    """One row per (benchmark, score), plus every run together; None when fewer than
    MIN_RUNS labelled runs carry scores. Scores are compared within a benchmark first: a
    score's scale differs between data sets, and so does the ACC a method can reach."""
    graded = [r for r in runs if r.metrics.get("acc") is not None and r.result.get("label_free")]
    if len(graded) < MIN_RUNS:
        return None
    header = ["benchmark", "score", "runs", "Spearman ρ (score, ACC)", "picked run", "its ACC",
              "best ACC", "median ACC"]  # fmt: skip
    table = Table("label_free", "Label-free selection: does the score track ACC?", header,
                  [], [], [])  # fmt: skip
    groups = {row: [r for r in graded if r.row == row] for row in sorted({r.row for r in graded})}
    if len(groups) > 1:
        groups["all benchmarks"] = graded
    for bench, members in groups.items():
        for path, label in SCORES:
            pairs = [(score_of(r, path), r) for r in members]
            pairs = [(s, r) for s, r in pairs if s is not None]
            if len(pairs) < MIN_RUNS:
                continue
            scores = np.array([s for s, _ in pairs])
            acc = np.array([100 * float(r.metrics["acc"]) for _, r in pairs])
            rho = spearmanr(scores, acc).statistic if np.ptp(scores) > 0 else float("nan")
            picked = pairs[int(np.argmax(scores))][1]
            row = [bench, label, str(len(pairs)), "–" if np.isnan(rho) else f"{rho:+.2f}",
                   f"{picked.row} / {picked.method} / seed {picked.seed}",
                   f"{100 * picked.metrics['acc']:.2f}", f"{acc.max():.2f}",
                   f"{np.median(acc):.2f}"]  # fmt: skip
            table.rows.append(row)
            table.plain.append(row)
    table.notes.append(
        "ρ near +1: ranking runs by the score ranks them by ACC; near 0 or below: the score "
        "does not tell good runs from bad ones on these data."
    )
    return table if table.rows else None


def seed_table(runs: list[Run]) -> Table | None:
    """Per experiment with two or more seeds: the mean pairwise NMI of the seeds' train
    assignments (1: every seed found the same clusters), from `assignments/train.parquet`."""
    experiments = group([r.result for r in runs])
    labels = differing(experiments)
    table = Table("seed_agreement", "Seeds' agreement: mean pairwise NMI of the train assignments",
                  ["benchmark", "method", "settings", "seeds", "NMI (%)"], [], [], [])  # fmt: skip
    for key, results in sorted(experiments.items(), key=lambda kv: labels[kv[0]]):
        value = seed_stability(results)
        if value is None:
            continue
        first = results[0]
        row = [first["dataset"], first["method"], labels[key] or "–",
               ",".join(str(r["seed"]) for r in sorted(results, key=lambda r: r["seed"])),
               f"{100 * value:.2f}"]  # fmt: skip
        table.rows.append(row)
        table.plain.append(row)
    table.rows.sort(key=lambda r: (r[0], r[1]))
    table.plain.sort(key=lambda r: (r[0], r[1]))
    return table if table.rows else None


def selection_figure(runs: list[Run], out: Path) -> Path | None:
    """One panel per score: score against ACC, one point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for path, label in SCORES:
        points = [(score_of(r, path), 100 * r.metrics["acc"]) for r in runs
                  if r.metrics.get("acc") is not None]  # fmt: skip
        points = [p for p in points if p[0] is not None]
        if len(points) >= MIN_RUNS:
            panels.append((label, np.array(points)))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (label, points) in zip(axes[0], panels, strict=True):
        ax.scatter(points[:, 0], points[:, 1], s=14)
        ax.set(xlabel=label, ylabel="ACC (%)")
    fig.tight_layout()
    path = out / "label_free_selection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
