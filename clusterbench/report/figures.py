"""The paper's figures from a sweep's runs (PNG, matplotlib Agg). Each figure takes the runs it
needs from any sweep given to the report; one whose inputs are absent raises `Missing` with
what it lacks and is listed as missing, never drawn empty.

Runs enter a figure at the paper's standard setting (as many clusters as classes, k = 50
neighbours) unless the figure varies that setting (Figure 5: k, Figure 6: clusters); the same
(benchmark, method, features, setting, seed) measured in two sweeps counts once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clusterbench.evaluation.plots import reliability_diagram  # noqa: E402
from clusterbench.report.collect import Run  # noqa: E402
from clusterbench.report.paper import paper_row_value  # noqa: E402
from clusterbench.results import LABELS, PROBING, SEPARABILITY, ZEROSHOT  # noqa: E402

COLORS = {"kmeans": "tab:blue", "temi": "tab:orange", "scanv2": "tab:green"}
DEPTHS = [(f"coarse_d{d}", d) for d in range(1, 9)] + [("in21k", 9)]
BANDS = [("tiny", 5), ("small", 15), ("base", 25), ("large", 35), ("huge", 45)]
DEFAULT_KNN = 50


class Missing(Exception):
    """A figure's inputs are not among the runs (the message says which)."""


def _knn(run: Run) -> int | None:
    value = run.setting("method.knn")
    return int(value) if isinstance(value, int) else None


def _clusters(run: Run) -> int | None:
    value = run.metrics.get("num_clusters")
    return int(value) if isinstance(value, (int, float)) else None


def standard(run: Run, vary: str = "") -> bool:
    """The paper's setting in what this figure does not vary: C clusters for C classes, k=50."""
    classes = run.metrics.get("num_classes")
    if vary != "clusters" and _clusters(run) is not None and classes is not None:
        if _clusters(run) != int(classes):
            return False
    return vary == "knn" or _knn(run) in (None, DEFAULT_KNN)


def select(
    runs: list[Run], rows: set[str], methods: set[str], vary: str = "", prefer: str = ""
) -> list[Run]:
    """Runs of these rows and methods at the standard setting, one per (row, method,
    features, varied value, seed), taking the one from sweep `prefer` when both have it."""
    picked: dict[tuple, Run] = {}
    for run in runs:
        if run.row not in rows or run.method not in methods or not standard(run, vary):
            continue
        x = _knn(run) if vary == "knn" else _clusters(run) if vary == "clusters" else None
        key = (run.row, run.method, run.extractor, x, run.seed)
        if key not in picked or (run.table == prefer and picked[key].table != prefer):
            picked[key] = run
    return list(picked.values())


def _one_extractor(runs: list[Run], prefer: str) -> list[Run]:
    """The runs of one feature extractor: `prefer` when present, else the most common."""
    if not runs:
        return runs
    names = Counter(r.extractor for r in runs)
    name = prefer if prefer in names else names.most_common(1)[0][0]
    return [r for r in runs if r.extractor == name]


def _stats(runs: list[Run], metric: str) -> tuple[float, float, int] | None:
    values = [100 * float(r.metrics[metric]) for r in runs if r.metrics.get(metric) is not None]
    return (float(np.mean(values)), float(np.std(values)), len(values)) if values else None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curve_figure(
    runs: list[Run], points: list[tuple[str, int]], xlabel: str, title: str, path: Path,
    xticks: dict[int, str] | None = None,
) -> Path:  # fmt: skip
    """ACC (mean ± std over seeds) per method against a benchmark parameter, with the paper's
    numbers (Table 5) dashed."""
    rows = {r for r, _ in points}
    chosen = _one_extractor(select(runs, rows, set(COLORS), prefer=path.stem), "ibot_vitl")
    if not chosen:
        raise Missing(f"no k-means/TEMI/SCANv2 results on {', '.join(r for r, _ in points)}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, color in COLORS.items():
        xs, ys, es, px, py = [], [], [], [], []
        for row, x in points:
            s = _stats([r for r in chosen if r.row == row and r.method == method], "acc")
            if s is not None:
                xs.append(x), ys.append(s[0]), es.append(s[1])
            p = paper_row_value(row, method)
            if p is not None:
                px.append(x), py.append(p)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", color=color, capsize=3, label=LABELS[method])
        if py:
            ax.plot(px, py, ls="--", color=color, alpha=0.6, label=f"{LABELS[method]} (paper)")
    ax.set(xlabel=xlabel, ylabel="ACC (%)", title=f"{title} ({chosen[0].extractor})")
    if xticks:
        ax.set_xticks(list(xticks), list(xticks.values()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def figure2_left(runs: list[Run], out: Path) -> list[Path]:
    ticks = {d: (str(d) if d < 9 else "GT") for _, d in DEPTHS}
    return [_curve_figure(runs, DEPTHS, "maximum hierarchy depth d", "Figure 2 (left)",
                          out / "figure2_left.png", ticks)]  # fmt: skip


def figure2_right(runs: list[Run], out: Path) -> list[Path]:
    return [_curve_figure(runs, BANDS, "interval s around the median, m_s = [50-s, 50+s]",
                          "Figure 2 (right)", out / "figure2_right.png")]  # fmt: skip


def merged_reliability(runs: list[Run]) -> tuple[dict, float] | None:
    """Reliability bins summed over seeds (count-weighted accuracy and confidence) and the
    mean ECE; None when no run recorded bins."""
    bins = [r.result["reliability"] for r in runs if r.result.get("reliability")]
    if not bins:
        return None
    edges = bins[0]["bin_edges"]
    count = np.sum([b["count"] for b in bins], axis=0).astype(float)
    safe = np.maximum(count, 1)
    acc = np.sum([np.multiply(b["accuracy"], b["count"]) for b in bins], axis=0) / safe
    conf = np.sum([np.multiply(b["confidence"], b["count"]) for b in bins], axis=0) / safe
    eces = [float(r.metrics["ece"]) for r in runs if r.metrics.get("ece") is not None]
    merged = {"bin_edges": edges, "accuracy": acc.tolist(), "confidence": conf.tolist(),
              "count": count.astype(int).tolist()}  # fmt: skip
    return merged, float(np.mean(eces)) if eces else float("nan")


def _in1k_calibration(runs: list[Run], prefer: str) -> dict[str, list[Run]]:
    chosen = _one_extractor(select(runs, {"in1k"}, {"temi", "scanv2"}, prefer=prefer), "mae_r_vith")
    by_method = {m: [r for r in chosen if r.method == m and r.result.get("reliability")]
                 for m in ("scanv2", "temi")}  # fmt: skip
    if not any(by_method.values()):
        raise Missing("no TEMI/SCANv2 results with confidences on in1k")
    return by_method


def _reliability_panels(by_method: dict[str, list[Run]], names: dict[str, Path]) -> list[Path]:
    out = []
    for method, path in names.items():
        merged = merged_reliability(by_method.get(method, []))
        if merged is None:
            continue
        r = by_method[method][0]
        title = f"{LABELS[method]} on {r.row} ({r.extractor}, {len(by_method[method])} seeds)"
        out.append(reliability_diagram(merged[0], merged[1], path, title))
    return out


def figure3(runs: list[Run], out: Path) -> list[Path]:
    """Left, middle: reliability of SCANv2 and TEMI on ImageNet-1K; right: TEMI − SCANv2 ACC
    on ImageNet-1K for each feature extractor measured."""
    paths: list[Path] = []
    try:
        by_method = _in1k_calibration(runs, "figure3")
        paths += _reliability_panels(
            by_method,
            {"scanv2": out / "figure3_left_scanv2.png", "temi": out / "figure3_middle_temi.png"},
        )
    except Missing:
        pass
    chosen = select(runs, {"in1k"}, {"temi", "scanv2"}, prefer="figure3")
    names, gaps, errs = [], [], []
    for extractor in sorted({r.extractor for r in chosen}):
        t = _stats([r for r in chosen if r.extractor == extractor and r.method == "temi"], "acc")
        s = _stats([r for r in chosen if r.extractor == extractor and r.method == "scanv2"], "acc")
        if t and s:
            names.append(extractor)
            gaps.append(t[0] - s[0])
            errs.append(float(np.hypot(t[1], s[1])))
    if names:
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 4))
        ax.bar(names, gaps, yerr=errs, capsize=3, color=["tab:orange" if g > 0 else "tab:green"
                                                        for g in gaps])  # fmt: skip
        ax.axhline(0, color="k", lw=0.8)
        ax.set(ylabel="ACC TEMI − SCANv2 (%)", title="Figure 3 (right): ImageNet-1K")
        ax.tick_params(axis="x", rotation=45)
        paths.append(_save(fig, out / "figure3_right.png"))
    if not paths:
        raise Missing("no TEMI and SCANv2 results on in1k")
    return paths


def figure4(runs: list[Run], out: Path) -> list[Path]:
    """Separability metrics against probe accuracy with R² (clusterbench.report.figure4)."""
    from clusterbench.report.figure4 import fit, pair, plot

    points = pair([r.result for r in runs if r.method in (PROBING, SEPARABILITY)])
    if len(points) < 3:
        raise Missing(
            f"{len(points)} benchmarks have both a probing and a separability result; "
            "the fit needs 3"
        )
    return [plot(points, fit(points), out / "figure4.png")]


def figure5(runs: list[Run], out: Path) -> list[Path]:
    """TEMI ACC against the number of neighbours k on coarse d = 1, 2, k-means as a line."""
    rows = ("coarse_d1", "coarse_d2")
    temi = _one_extractor(select(runs, set(rows), {"temi"}, vary="knn", prefer="figure5"),
                          "ibot_vitl")  # fmt: skip
    if not temi:
        raise Missing("no TEMI results on coarse_d1 or coarse_d2")
    kmeans = [r for r in select(runs, set(rows), {"kmeans"}) if r.extractor == temi[0].extractor]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, row in zip(axes, rows, strict=True):
        mine = [r for r in temi if r.row == row]
        ks = sorted({_knn(r) for r in mine if _knn(r) is not None})
        stats = [_stats([r for r in mine if _knn(r) == k], "acc") for k in ks]
        if ks:
            ax.errorbar(ks, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                        color=COLORS["temi"], capsize=3, label="TEMI")  # fmt: skip
        base = _stats([r for r in kmeans if r.row == row], "acc")
        if base is not None:
            ax.axhline(base[0], color=COLORS["kmeans"], label=f"k-means ({base[2]} seeds)")
            ax.axhspan(base[0] - base[1], base[0] + base[1], color=COLORS["kmeans"], alpha=0.15)
        ax.set(xlabel="number of neighbours k", ylabel="ACC (%)", title=f"Figure 5: {row}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [_save(fig, out / "figure5.png")]


def figure6(runs: list[Run], out: Path) -> list[Path]:
    """NMI against the number of clusters C on ImageNet-1K (overclustering)."""
    chosen = _one_extractor(
        select(runs, {"in1k"}, set(COLORS), vary="clusters", prefer="figure6"), "mae_r_vith"
    )
    series = {m: [r for r in chosen if r.method == m] for m in COLORS}
    if not any(len({_clusters(r) for r in rs}) >= 2 for rs in series.values()):
        raise Missing("no method on in1k at two or more values of method.num_clusters")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, rs in series.items():
        cs = sorted({_clusters(r) for r in rs if _clusters(r) is not None})
        if not cs:
            continue
        stats = [_stats([r for r in rs if _clusters(r) == c], "nmi") for c in cs]
        ax.errorbar(cs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                    color=COLORS[method], capsize=3, label=LABELS[method])  # fmt: skip
    ax.set(xlabel="number of clusters C", ylabel="NMI (%)",
           title=f"Figure 6: ImageNet-1K ({chosen[0].extractor})")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    return [_save(fig, out / "figure6.png")]


def figure7(runs: list[Run], out: Path) -> list[Path]:
    """Zero-shot reliability diagrams for the three candidate sets (all, level, siblings)."""
    zs = [r for r in runs if r.method == ZEROSHOT]
    paths = []
    for candidates in ("all", "level", "siblings"):
        mine = [
            r for r in zs if (r.result.get("method_info") or {}).get("candidates") == candidates
        ]
        merged = merged_reliability(mine)
        if merged is None:
            continue
        acc = _stats(mine, "acc")
        title = f"CLIP zero-shot, {candidates} ({mine[0].row}): ACC {acc[0]:.2f} %"
        paths.append(reliability_diagram(merged[0], merged[1], out / f"figure7_{candidates}.png",
                                         title))  # fmt: skip
    if not paths:
        raise Missing("no zero-shot results (python -m clusterbench zeroshot)")
    return paths


def figure8(runs: list[Run], out: Path) -> list[Path]:
    """Left: confidence histograms of TEMI and SCANv2 on ImageNet-1K (from the reliability bins
    of results.json); middle, right: their reliability diagrams."""
    by_method = _in1k_calibration(runs, "figure8")
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for method, rs in by_method.items():
        merged = merged_reliability(rs)
        if merged is None:
            continue
        edges = np.asarray(merged[0]["bin_edges"])
        count = np.asarray(merged[0]["count"], dtype=float)
        conf = _stats(rs, "mean_confidence")
        label = LABELS[method] + (f" (mean {conf[0]:.1f} %)" if conf else "")
        ax.stairs(count / max(count.sum(), 1), edges, color=COLORS[method], lw=2, label=label)
    ax.set(xlabel="max softmax probability", ylabel="fraction of samples",
           title="Figure 8 (left): ImageNet-1K")  # fmt: skip
    ax.legend(fontsize=8)
    paths = [_save(fig, out / "figure8_left.png")]
    paths += _reliability_panels(
        by_method,
        {"scanv2": out / "figure8_middle_scanv2.png", "temi": out / "figure8_right_temi.png"},
    )
    return paths


FIGURES: dict[str, Callable[[list[Run], Path], list[Path]]] = {
    "figure2_left": figure2_left,
    "figure2_right": figure2_right,
    "figure3": figure3,
    "figure4": figure4,
    "figure5": figure5,
    "figure6": figure6,
    "figure7": figure7,
    "figure8": figure8,
}


def draw_all(runs: list[Run], out: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Every figure the runs allow; the others with the reason they are missing."""
    drawn: dict[str, list[Path]] = {}
    missing: dict[str, str] = {}
    for name, draw in FIGURES.items():
        try:
            drawn[name] = draw(runs, out)
        except Missing as exc:
            missing[name] = str(exc)
    return drawn, missing


def counts_by(runs: list[Run]) -> dict[str, int]:
    """Runs per method (for the report's header)."""
    out: dict[str, int] = defaultdict(int)
    for r in runs:
        out[r.method] += 1
    return dict(out)
