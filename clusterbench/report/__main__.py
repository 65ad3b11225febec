"""`python -m clusterbench report SWEEP_DIR... [--out DIR]`

Reads every results.json under the given directories (clustering sweeps, and the probing,
separability and zero-shot runs) and writes into DIR (default: SWEEP_DIR/report):
report.md (every table, the figures drawn and missing, the runs that gave no result),
<table>.md and <table>.csv in the paper's layout, cells.csv (one line per cell: mean, std,
seeds, the paper's number, the difference, the run directories) and the figures as PNG.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from clusterbench.report.collect import Sweep, read_sweeps
from clusterbench.report.figures import counts_by, draw_all
from clusterbench.report.k_estimation import k_figure, k_table
from clusterbench.report.label_free import seed_table, selection_figure, selection_table
from clusterbench.report.tables import Index, Table, build_tables


def _problems_md(sweep: Sweep) -> str:
    if not sweep.problems:
        return "## Runs without a result\n\nnone: every job of the sweep wrote results.json\n"
    lines = ["## Runs without a result", "", "| status | run | table / row / method / seed | reason |",
             "|---|---|---|---|"]  # fmt: skip
    for p in sorted(sweep.problems, key=lambda p: (p.kind, str(p.path))):
        cell = " / ".join("?" if v is None else str(v) for v in (p.table, p.row, p.method, p.seed))
        lines.append(f"| {p.kind} | `{p.path}` | {cell} | {p.reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _write_table(table: Table, out: Path) -> None:
    (out / f"{table.name}.md").write_text(table.markdown())
    with (out / f"{table.name}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([h.strip("*") for h in table.header])
        writer.writerows(table.plain)


def report(dirs: list[Path], out: Path) -> dict:
    """Write the report of the runs under `dirs` into `out`; returns what was written."""
    sweep = read_sweeps(dirs)
    if not sweep.runs and not sweep.problems:
        raise SystemExit(f"error: no results.json and no job directories under "
                         f"{', '.join(map(str, dirs))}")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(sweep)
    drawn, missing = draw_all(sweep.runs, out)
    seeds = seed_table(sweep.runs)
    if seeds is not None:
        tables.append(seeds)
    chosen_k = k_table(sweep.runs, Index(sweep))
    if chosen_k is not None:
        tables.append(chosen_k)
        figure = k_figure(sweep.runs, out)
        if figure is not None:
            drawn["K estimation"] = [figure]
    selection = selection_table(sweep.runs)
    if selection is not None:
        tables.append(selection)
        figure = selection_figure(sweep.runs, out)
        if figure is not None:
            drawn["label-free selection"] = [figure]
    for table in tables:
        _write_table(table, out)
    cells = [c for t in tables for c in t.cells]
    if cells:
        with (out / "cells.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(cells[0]))
            writer.writeheader()
            writer.writerows(cells)
    counts = ", ".join(f"{n} {m}" for m, n in sorted(counts_by(sweep.runs).items()))
    parts = [
        "# Report",
        "",
        f"{len(sweep.runs)} runs ({counts or 'none'}) from {', '.join(f'`{d}`' for d in dirs)}; "
        "mean ± std over seeds (population std), the number of seeds in parentheses "
        "(`2 of 3`: a seed is missing); best clustering accuracy in bold, probing in italics.",
        "",
        *(t.markdown() for t in tables),
        "## Figures",
        "",
        *(f"- {name}: " + ", ".join(f"`{p.name}`" for p in paths) for name, paths in drawn.items()),
        *(f"- {name}: missing ({why})" for name, why in missing.items()),
        "",
        _problems_md(sweep),
    ]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return {"text": text, "tables": tables, "figures": drawn, "missing_figures": missing,
            "problems": sweep.problems, "out": out}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterbench report",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, help="where to write (default: SWEEP_DIR/report)")
    args = parser.parse_args(argv)
    absent = [d for d in args.dirs if not d.is_dir()]
    if absent:
        print(f"error: not a directory: {', '.join(map(str, absent))}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0] / "report"
    try:
        written = report(args.dirs, out)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(written["text"])
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
