"""The paper's numbers as data (`paper_numbers.tsv`): per table, its rows in the paper's order
with label, section, features and size, and the value of each (column, metric) in %."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

NUMBERS = Path(__file__).with_name("paper_numbers.tsv")


@dataclass
class PaperRow:
    row: str
    meta: dict[str, str] = field(default_factory=dict)
    values: dict[tuple[str, str], float] = field(default_factory=dict)  # (column, metric) -> %


@cache
def paper_tables() -> dict[str, dict[str, PaperRow]]:
    """table -> row -> PaperRow, rows in the order the paper prints them."""
    tables: dict[str, dict[str, PaperRow]] = {}
    with NUMBERS.open() as fh:
        lines = [ln for ln in fh if not ln.startswith("#")]
    for rec in csv.DictReader(lines, delimiter="\t"):
        row = tables.setdefault(rec["table"], {}).setdefault(rec["row"], PaperRow(rec["row"]))
        if rec["column"] == "meta":
            row.meta[rec["metric"]] = rec["value"] or ""
        else:
            row.values[(rec["column"], rec["metric"])] = float(rec["value"])
    return tables


def paper_value(table: str, row: str, column: str, metric: str = "acc") -> float | None:
    entry = paper_tables().get(table, {}).get(row)
    return None if entry is None else entry.values.get((column, metric))


def paper_row_value(
    row: str, column: str, metric: str = "acc", prefer: str = "table5"
) -> float | None:
    """The paper's number for a benchmark in any table (figures plot rows of the tables)."""
    tables = paper_tables()
    for name in [prefer, *sorted(tables)]:
        value = paper_value(name, row, column, metric)
        if value is not None:
            return value
    return None
