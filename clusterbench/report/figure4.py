"""Figure 4: separability metrics against linear-probe accuracy across benchmarks, with R².

    python -m clusterbench.report.figure4 RESULTS... [--out figure4.png] [--json fits.json]

RESULTS are results.json files or directories holding them: the separability runs
(`python -m clusterbench separability`) and the probing runs (`python -m clusterbench probe`)
of the same benchmarks. They are paired by benchmark name and base store (several seeds of one
are averaged); each metric is fitted against the probe's `metrics.acc` by least squares
(scipy.stats.linregress), and R² is the squared correlation (the paper: R² > 0.97).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import linregress

from clusterbench.results import PROBING, RESULTS_FILE, SEPARABILITY, iter_results
from clusterbench.results import SEPARABILITY_METRICS as METRICS

LABELS = {
    "l_align": r"$\mathcal{L}_{align}$",
    "davies_bouldin": "Davies-Bouldin score",
    "silhouette": "Silhouette score",
}


def load(paths: list[Path]) -> list[dict]:
    """Every results.json named or found below the given paths."""
    out = []
    for path in paths:
        if path.is_file():
            out.append(json.loads(path.read_text()))
        elif path.is_dir():
            out.extend(iter_results([path]))
        else:
            raise FileNotFoundError(f"{path} is neither a {RESULTS_FILE} nor a directory")
    return out


def _key(result: dict) -> tuple[str, str]:
    return result["dataset"], str(result.get("dataset_summary", {}).get("store", ""))


def pair(results: list[dict]) -> list[dict]:
    """One point per benchmark measured by both: probe accuracy and each metric (seed means)."""
    probe: dict[tuple, list[float]] = defaultdict(list)
    sep: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.get("method") == PROBING and r["metrics"].get("acc") is not None:
            probe[_key(r)].append(float(r["metrics"]["acc"]))
        elif r.get("method") == SEPARABILITY:
            for name in METRICS:
                if r["metrics"].get(name) is not None:
                    sep[_key(r)][name].append(float(r["metrics"][name]))
    points = []
    for key in sorted(set(probe) & set(sep)):
        point = {"dataset": key[0], "store": key[1], "probe_acc": float(np.mean(probe[key]))}
        point.update({name: float(np.mean(v)) for name, v in sep[key].items()})
        points.append(point)
    return points


def fit(points: list[dict]) -> dict[str, dict]:
    """Least-squares line and R² of each metric against probe accuracy."""
    fits = {}
    for name in METRICS:
        xs = [p["probe_acc"] for p in points if name in p]
        ys = [p[name] for p in points if name in p]
        if len(xs) < 3 or len(set(xs)) < 2:
            continue
        line = linregress(xs, ys)
        fits[name] = {
            "slope": float(line.slope),
            "intercept": float(line.intercept),
            "r2": float(line.rvalue**2),
            "p_value": float(line.pvalue),
            "n": len(xs),
        }
    return fits


def plot(points: list[dict], fits: dict[str, dict], out: Path) -> Path:
    """Three panels (L_align, Davies-Bouldin, silhouette) vs probe accuracy, as Figure 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.2))
    for ax, name in zip(axes, METRICS, strict=True):
        pts = [p for p in points if name in p]
        xs = np.array([100 * p["probe_acc"] for p in pts])
        ax.scatter(xs, [p[name] for p in pts], s=24, zorder=3)
        for p, x in zip(pts, xs, strict=True):
            ax.annotate(
                p["dataset"], (x, p[name]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        if name in fits:
            f = fits[name]
            grid = np.linspace(xs.min(), xs.max(), 50)
            ax.plot(grid, f["intercept"] + f["slope"] * grid / 100, color="C3", lw=1)
            ax.set_title(f"{LABELS[name]}: $R^2$ = {f['r2']:.3f}")
        else:
            ax.set_title(f"{LABELS[name]}: too few benchmarks to fit")
        ax.set_xlabel("linear probing accuracy (%)")
        ax.set_ylabel(LABELS[name])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench.report.figure4",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("results", nargs="+", type=Path, help="results.json files or dirs")
    parser.add_argument("--out", type=Path, default=Path("figure4.png"), help="PNG to write")
    parser.add_argument("--json", type=Path, help="also write the points and fits here")
    args = parser.parse_args(argv)
    try:
        points = pair(load(args.results))
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(points) < 3:
        print(
            f"error: {len(points)} benchmarks have both a probing and a separability result; "
            "a fit needs at least 3 (run both commands on more datasets)",
            file=sys.stderr,
        )
        return 2
    fits = fit(points)
    plot(points, fits, args.out)
    for name in METRICS:
        if name in fits:
            f = fits[name]
            print(f"{name:15} R² = {f['r2']:.4f}  slope {f['slope']:+.4g}  ({f['n']} benchmarks)")
    print(f"figure: {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"points": points, "fits": fits}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
