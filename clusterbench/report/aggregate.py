"""Mean ± std over seeds: `clusterbench aggregate DIR [DIR ...]`.

A thin view of the report's reader (`clusterbench.report.collect`, one reader of results.json,
one schema): every results.json under the given directories, grouped by experiment (the run's
whole config except the seed and where outputs go), one printed row per group. Groups that
share dataset and method are told apart by the settings that differ. Unreadable files are
named and skipped. `python -m clusterbench report` writes the paper's tables and figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clusterbench.report.collect import collect, summarize
from clusterbench.results import METRIC_ORDER


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="clusterbench aggregate", description=__doc__.splitlines()[0]
    )
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
    for col in ("dataset", "method", "settings", "seeds", *METRIC_ORDER, "seed NMI"):
        table.add_column(col)
    for row in rows:
        seeds = ",".join(map(str, row["seeds"]))
        cells = [row["dataset"], row["method"], row["settings"], seeds]
        for key in METRIC_ORDER:
            v = row.get(key)
            scale = 1 if key == "ece" else 100
            spread = "n/a" if v and v["std"] is None else f"{scale * v['std']:.2f}" if v else ""
            cells.append(f"{scale * v['mean']:.2f} ± {spread}" if v else "")
        cells.append("" if row["seed_nmi"] is None else f"{100 * row['seed_nmi']:.2f}")
        table.add_row(*cells)
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
