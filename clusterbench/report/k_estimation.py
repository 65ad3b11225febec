"""How well was the number of clusters chosen? The K-estimation table of a sweep.

One row per (table, benchmark, method, estimator) among the runs that estimated K
(`method.num_clusters=auto`, results.json `method_info.k_estimation`): the estimated K over
seeds, the true K (classes present in the train split), the relative error, the level of
classes the estimate is closest to (classes, superclasses, a coarser depth), and the ACC / NMI
of the method at the estimated K beside its ACC / NMI at the true K (the same benchmark and
method told K, from the same sweep). ACC with K != C is the Hungarian one-to-one matching
(clusters left unmatched count as errors); NMI needs no matching. A log-log figure draws the
estimates against the true K.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from clusterbench.report.collect import Run
from clusterbench.report.tables import Cell, Index, Table, estimated_k
from clusterbench.results import LABELS


def _estimate(run: Run) -> dict:
    return run.result["method_info"]["k_estimation"]


def _spread(values: list[float], decimals: int = 0) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {float(np.std(values)):.{decimals}f}"


def _metric(runs: list[Run], metric: str) -> Cell:
    cell = Cell(asked=len(runs))
    for run in sorted(runs, key=lambda r: r.seed):
        value = run.metrics.get(metric)
        if value is not None:
            cell.values.append(float(value))
            cell.seeds.append(run.seed)
            cell.files.append(str(run.dir))
    return cell


def _told(index: Index, table: str, row: str, method: str, extractor: str) -> list[Run]:
    """The runs of the same benchmark and method told K: from the same table, else from any
    table of the report with the same extractor (the estimate and the runs it is compared
    with are often separate sweeps)."""
    same = index.clustering.get(table, {}).get(row, {}).get(method, [])
    if same:
        return same
    return [r for rows in index.clustering.values() for r in rows.get(row, {}).get(method, [])
            if r.extractor == extractor]  # fmt: skip


def k_table(runs: list[Run], index: Index) -> Table | None:
    """The K-estimation table, or None when no run estimated K."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if estimated_k(run):
            groups[(run.table, run.row, run.method, _estimate(run).get("estimator", "?"))].append(
                run
            )
    if not groups:
        return None
    header = ["table", "benchmark", "method", "estimator", "estimated K", "true K",
              "relative error", "closest level", "ACC at est. K", "ACC at true K",
              "NMI at est. K", "NMI at true K", "estimation (s)", "fit at est. K (s)"]  # fmt: skip
    table = Table("k_estimation", "Choosing the number of clusters without labels", header,
                  [], [], [])  # fmt: skip
    for (name, row, method, estimator), members in sorted(groups.items()):
        found = [_estimate(r) for r in members]
        ks = [int(f["k"]) for f in found]
        truths = sorted({int(f["k_true"]) for f in found if f.get("k_true")})
        errors = [100 * f["relative_error"]["classes"] for f in found
                  if "classes" in (f.get("relative_error") or {})]  # fmt: skip
        closest = Counter(f.get("closest_level") for f in found if f.get("closest_level"))
        levels = found[0].get("levels") or {}
        level = "–"
        if closest:
            best, count = closest.most_common(1)[0]
            off = [100 * f["relative_error"][best] for f in found
                   if best in (f.get("relative_error") or {})]  # fmt: skip
            level = f"{best} ({levels.get(best, '?')}): {np.mean(off):+.1f} %" + (
                f", {count} of {len(found)} seeds" if count < len(found) else ""
            )
        told = _told(index, name, row, method, members[0].extractor)
        cells = {
            (metric, where): _metric(members if where == "est" else told, metric)
            for metric in ("acc", "nmi")
            for where in ("est", "true")
        }
        seconds = [float(f.get("seconds", np.nan)) for f in found]
        fits = [float(r.result.get("timings", {}).get("fit_predict_s", np.nan)) for r in members]
        seeds = f" ({len(ks)} seeds)" if len(ks) > 1 else ""
        cols = [
            name,
            row,
            LABELS.get(method, method),
            str(estimator),
            _spread(ks) + seeds,
            "/".join(map(str, truths)) or "– (no labels)",
            (_spread(errors, 1) + " %") if errors else "–",
            level,
            cells[("acc", "est")].text(),
            cells[("acc", "true")].text() if told else "– (no run told K)",
            cells[("nmi", "est")].text(),
            cells[("nmi", "true")].text() if told else "– (no run told K)",
            _spread([s for s in seconds if np.isfinite(s)], 2),
            _spread([s for s in fits if np.isfinite(s)], 2),
        ]
        table.rows.append(cols)
        table.plain.append(cols)
        for (metric, where), cell in cells.items():
            table.cells.append({
                "table": "k_estimation", "row": row, "column": f"{method}/{estimator}/{where}",
                "metric": metric, "mean": None if cell.mean is None else round(cell.mean, 4),
                "std": None if cell.std is None else round(cell.std, 4), "n": cell.n,
                "asked": cell.asked, "seeds": " ".join(map(str, cell.seeds)), "paper": None,
                "diff": None, "extractor": members[0].extractor, "runs": " ".join(cell.files),
            })  # fmt: skip
    table.notes += [
        "relative error = (estimated K - true K) / true K, against the classes present in the "
        "train split; `closest level`: the level of classes (classes, superclasses, coarser "
        "depths) whose count the estimate is nearest to in ratio, and the mean relative "
        "error against it.",
        "ACC at the estimated K is the Hungarian one-to-one matching of clusters to classes "
        "(with K != C, unmatched rows count as errors); NMI needs no matching.",
    ]
    return table


def k_figure(runs: list[Run], out: Path) -> Path | None:
    """Estimated K against the true K (log-log), one point per run, the diagonal drawn."""
    points = defaultdict(list)
    for run in runs:
        if estimated_k(run) and _estimate(run).get("k_true"):
            found = _estimate(run)
            points[(run.method, found.get("estimator", "?"))].append((found["k_true"], found["k"]))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    every = []
    for (method, estimator), pts in sorted(points.items()):
        xy = np.asarray(pts, dtype=float)
        every.append(xy)
        ax.scatter(xy[:, 0], xy[:, 1], s=16, label=f"{LABELS.get(method, method)} / {estimator}")
    xy = np.concatenate(every)
    lo, hi = xy.min() / 1.5, xy.max() * 1.5
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--", label="estimate = true K")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="true K (classes)",
           ylabel="estimated K", title="Number of clusters chosen without labels")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "k_estimation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
