"""Mean ± std over seeds: `python -m clusterbench.aggregate DIR [DIR ...]`.

Reads every results.json under the given directories (a --multirun sweep, or several runs),
groups them by dataset and method, and prints one row per group. The paper reports the mean
of three seeds; the std shows whether a difference between methods is real.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from clusterbench.results import METRIC_ORDER, iter_results

METRICS = METRIC_ORDER


def collect(dirs: list[Path]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for result in iter_results(dirs):
        groups[(result["dataset"], result["method"])].append(result)
    return dict(groups)


def summarize(groups: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """One row per (dataset, method): seeds and mean/std (population std, ddof=0) per metric."""
    rows = []
    for (dataset, method), results in sorted(groups.items()):
        row = {"dataset": dataset, "method": method, "seeds": sorted(r["seed"] for r in results)}
        for key in METRICS:
            values = [r["metrics"][key] for r in results if key in r["metrics"]]
            if values:
                row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    rows = summarize(collect(args.dirs))
    if not rows:
        parser.error(f"no results.json under {', '.join(map(str, args.dirs))}")
    table = Table(title="mean ± std over seeds (%)")
    for col in ("dataset", "method", "seeds", *METRICS):
        table.add_column(col)
    for row in rows:
        cells = [row["dataset"], row["method"], ",".join(map(str, row["seeds"]))]
        for key in METRICS:
            v = row.get(key)
            scale = 1 if key == "ece" else 100
            cells.append(f"{scale * v['mean']:.2f} ± {scale * v['std']:.2f}" if v else "")
        table.add_row(*cells)
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
