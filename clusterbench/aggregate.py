"""Mean ± std over seeds: `python -m clusterbench.aggregate DIR [DIR ...]`.

Reads every results.json under the given directories (a --multirun sweep, or several runs),
groups them by experiment, everything in the run's config except the seed and where outputs
go, and prints one row per group. Groups that share dataset and method are told apart by the
settings that differ. The paper reports the mean of three seeds; the std shows whether a
difference between methods is real. Unreadable files are named and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from clusterbench.results import METRIC_ORDER, iter_results

METRICS = METRIC_ORDER


# Config keys that say where a run writes or how it reports, not what it computes.
NOT_EXPERIMENT = ("seed", "paths", "logger", "hydra", "trainer.enable_progress_bar",
                  "trainer.log_every_n_steps", "method.resume")  # fmt: skip


def flatten(node, prefix: str = "") -> dict[str, object]:
    """{"a.b": leaf} for a nested config (lists kept as values)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def experiment_of(result: dict) -> dict[str, object]:
    """The settings that define a result's experiment: its flattened config minus the seed
    and output/reporting keys (dataset and method always, for results without a config)."""
    settings = {
        k: v
        for k, v in flatten(result.get("config") or {}).items()
        if not any(k == p or k.startswith(p + ".") for p in NOT_EXPERIMENT)
    }
    return {**settings, "dataset": result["dataset"], "method": result["method"]}


def collect(dirs: list[Path], skipped: list[str] | None = None) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for result in iter_results(dirs, skipped):
        key = tuple(
            sorted((k, json.dumps(v, sort_keys=True)) for k, v in experiment_of(result).items())
        )
        groups[key].append(result)
    return dict(groups)


def differing(groups: dict[tuple, list[dict]]) -> dict[tuple, str]:
    """Per group: the settings that tell it apart from groups with its dataset and method."""
    label: dict[tuple, str] = {}
    for key in groups:
        mine = dict(key)
        peers = [dict(k) for k in groups if k != key and _same_cell(dict(k), mine)]
        names = sorted({n for p in peers for n in set(p) | set(mine) if p.get(n) != mine.get(n)})
        label[key] = " ".join(f"{n}={json.loads(mine[n]) if n in mine else '-'}" for n in names)
    return label


def _same_cell(a: dict, b: dict) -> bool:
    return a["dataset"] == b["dataset"] and a["method"] == b["method"]


def summarize(groups: dict[tuple, list[dict]]) -> list[dict]:
    """One row per experiment: seeds and mean/std (population std, ddof=0) per metric."""
    rows = []
    labels = differing(groups)
    order = sorted(groups, key=lambda k: (dict(k)["dataset"], dict(k)["method"], labels[k]))
    for key in order:
        results = groups[key]
        row = {
            "dataset": results[0]["dataset"],
            "method": results[0]["method"],
            "settings": labels[key],
            "seeds": sorted(r["seed"] for r in results),
            "files": [r["_file"] for r in results],
        }
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
    skipped: list[str] = []
    rows = summarize(collect(args.dirs, skipped))
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not rows:
        parser.error(f"no readable results.json under {', '.join(map(str, args.dirs))}")
    table = Table(title="mean ± std over seeds (%)")
    for col in ("dataset", "method", "settings", "seeds", *METRICS):
        table.add_column(col)
    for row in rows:
        seeds = ",".join(map(str, row["seeds"]))
        cells = [row["dataset"], row["method"], row["settings"], seeds]
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
