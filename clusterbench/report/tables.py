"""The paper's tables from a sweep's runs: rows = benchmarks, columns = # samples, # classes,
Probing, k-means, TEMI, SCANv2 (mean ± std over seeds, with the number of seeds), the paper's
number beside ours and the difference, then the methods beyond the paper that the sweep ran
(FINCH, TURTLE: marked †, no paper number); Table 4 in its multi-label layout. Runs that
estimated their number of clusters (`num_clusters=auto`) are not averaged with runs told K:
they fill the K-estimation table (`report/k_estimation.py`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clusterbench.report.collect import (
    PROBING,
    SEPARABILITY,
    ZEROSHOT,
    Problem,
    Run,
    Sweep,
    differing,
    group,
)
from clusterbench.report.paper import paper_tables
from clusterbench.results import BEYOND_PAPER, LABELS

PAPER_METHODS = ("kmeans", "temi", "scanv2")
METHODS = PAPER_METHODS + BEYOND_PAPER
MULTI_LABEL = (("acc", "top1→1"), ("top1_L_acc", "top1→L"), ("top5_acc", "top5→1"),
               ("top5_L_acc", "top5→L"))  # fmt: skip
NOT_CLUSTERING = (PROBING, SEPARABILITY, ZEROSHOT)


@dataclass
class Cell:
    """One metric of one (row, column): values over seeds (fractions) and what was asked."""

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    asked: int = 0
    files: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return 100 * float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        """Population std over seeds; None for one seed, whose spread is unknown, not 0."""
        return 100 * float(np.std(self.values)) if self.n > 1 else None

    def text(self, decimals: int = 2) -> str:
        if self.note and not self.values:
            return "– (settings differ)"
        if not self.values:
            return f"– (0 of {self.asked})" if self.asked else "–"
        seeds = f"{self.n} of {self.asked}" if self.asked > self.n else f"{self.n}"
        spread = "n/a" if self.std is None else f"{self.std:.{decimals}f}"
        return f"{self.mean:.{decimals}f} ± {spread} ({seeds})"


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]  # Markdown cells (bold/italics)
    plain: list[list[str]]  # the same without markup, for CSV
    cells: list[dict]  # tidy: one record per (row, column, metric)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


BEYOND_NOTE = "† beyond the paper: a method the paper did not run, so no paper number."


def _label(method: str) -> str:
    label = LABELS.get(method, method)
    return f"{label} †" if method in BEYOND_PAPER else label


def estimated_k(run: Run) -> bool:
    """A run that chose its own number of clusters (`method.num_clusters=auto`)."""
    return bool((run.result.get("method_info") or {}).get("k_estimation"))


def _fmt_samples(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _cell(runs: list[Run], metric: str, problems: list[Problem], row: str, column: str) -> Cell:
    cell = Cell()
    experiments = group([r.result for r in runs])
    if len(experiments) > 1:  # never one average over different settings
        differ = differing(experiments)
        cell.note = f"{len(experiments)} experiments share this cell, not averaged: " + "; ".join(
            f"{differ[key] or 'settings'} in {', '.join(sorted(str(Path(r['_file']).parent) for r in rs))}"
            for key, rs in experiments.items()
        )
        cell.asked = len({r.seed for r in runs})
        return cell
    for run in sorted(runs, key=lambda r: r.seed):
        value = run.metrics.get(metric)
        if value is not None:
            cell.values.append(float(value))
            cell.seeds.append(run.seed)
            cell.files.append(str(run.dir))
    lost = {p.seed for p in problems if p.row == row and p.method == column}
    cell.asked = len({r.seed for r in runs} | lost)
    return cell


def _diff(ours: float | None, paper: float | None) -> str:
    return "–" if ours is None or paper is None else f"{ours - paper:+.2f}"


def _record(table: str, row: str, column: str, metric: str, cell: Cell, paper: float | None,
            extractor: str) -> dict:  # fmt: skip
    return {
        "table": table,
        "row": row,
        "column": column,
        "metric": metric,
        "mean": None if cell.mean is None else round(cell.mean, 4),
        "std": None if cell.std is None else round(cell.std, 4),
        "n": cell.n,
        "asked": cell.asked,
        "seeds": " ".join(map(str, cell.seeds)),
        "paper": paper,
        "diff": None if cell.mean is None or paper is None else round(cell.mean - paper, 4),
        "extractor": extractor,
        "runs": " ".join(cell.files),
    }


class Index:
    """Runs by table / row / method, probes by (dataset, extractor), problems by table."""

    def __init__(self, sweep: Sweep) -> None:
        self.clustering: dict[str, dict[str, dict[str, list[Run]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.probes: dict[tuple[str, str], list[Run]] = defaultdict(list)
        for run in sweep.runs:
            if run.method == PROBING:
                self.probes[(run.row, run.extractor)].append(run)
            elif run.method not in NOT_CLUSTERING and not estimated_k(run):
                self.clustering[run.table][run.row][run.method].append(run)
        self.problems: dict[str, list[Problem]] = defaultdict(list)
        for p in sweep.problems:  # probes etc. fill the Probing column of any table
            if p.table is not None and p.method not in NOT_CLUSTERING:
                self.problems[p.table].append(p)

    def probe_runs(self, row: str, extractor: str | None) -> list[Run]:
        if extractor is not None and (row, extractor) in self.probes:
            return self.probes[(row, extractor)]
        matches = [runs for (r, _), runs in self.probes.items() if r == row]
        return matches[0] if len(matches) == 1 and extractor is None else []


def _row_extractor(methods: dict[str, list[Run]], paper_meta: dict[str, str]) -> str | None:
    names = Counter(r.extractor for runs in methods.values() for r in runs)
    if names:
        return names.most_common(1)[0][0]
    return paper_meta.get("extractor") or None


def _summary(methods: dict[str, list[Run]], key: str) -> int | None:
    for runs in methods.values():
        for run in runs:
            value = (run.result.get("dataset_summary") or {}).get(key)
            if value is not None:
                return int(value)
    return None


def accuracy_table(index: Index, name: str) -> Table | None:
    """A table in the layout of Tables 1-3 and 5 (paper rows, or the benchmarks present)."""
    paper = paper_tables().get(name, {})
    runs = index.clustering.get(name, {})
    if not runs and name not in index.problems:
        return None
    rows = list(paper) + sorted(r for r in runs if r not in paper)
    present = [m for m in METHODS if any(m in runs.get(r, {}) for r in rows)]
    others = sorted({m for r in rows for m in runs.get(r, {}) if m not in METHODS})
    methods = [*PAPER_METHODS, *(m for m in present if m in BEYOND_PAPER)] if paper else present
    methods += [m for m in others if m not in methods]
    probing = bool(paper) or any(index.probe_runs(r, None) for r in rows)
    columns = ([PROBING] if probing else []) + methods
    header = ["benchmark", "# samples", "# classes"]
    for col in columns:
        label = _label(col)
        header += [f"*{label}*" if col == PROBING else label]
        if paper and col not in BEYOND_PAPER:
            header += [f"{label} (paper)", "Δ"]
    table = Table(name, _title(name), header, [], [], [])
    if any(c in BEYOND_PAPER for c in columns):
        table.notes.append(BEYOND_NOTE)
    last_section = None
    for row in rows:
        meta = paper[row].meta if row in paper else {}
        section = meta.get("section") or None
        if section and section != last_section:
            table.rows.append([f"*{section}*"] + [""] * (len(header) - 1))
            table.plain.append([section] + [""] * (len(header) - 1))
        last_section = section
        methods_here = runs.get(row, {})
        extractor = _row_extractor(methods_here, meta)
        samples = _summary(methods_here, "num_train")
        classes = _summary(methods_here, "num_classes")
        md = [meta.get("label", row) + ("" if row in meta.get("label", row) else f" (`{row}`)")]
        md += [
            _fmt_samples(samples) if samples is not None else f"{meta.get('samples', '–')} (paper)",
            str(classes) if classes is not None else f"{meta.get('classes', '–')} (paper)",
        ]
        cells = {}
        for col in columns:
            source = (
                index.probe_runs(row, extractor) if col == PROBING else methods_here.get(col, [])
            )
            cells[col] = _cell(source, "acc", index.problems.get(name, []), row, col)
        best = max(
            (cells[c].mean for c in methods if cells[c].mean is not None and c in METHODS),
            default=None,
        )
        plain = list(md)
        for col in columns:
            cell, text = cells[col], cells[col].text()
            value = paper[row].values.get((col, "acc")) if row in paper else None
            if cell.note:
                table.notes.append(f"{row} / {LABELS.get(col, col)}: {cell.note}")
            shown = f"*{text}*" if col == PROBING else text
            if col != PROBING and best is not None and cell.mean == best:
                shown = f"**{text}**"
            md.append(shown)
            plain.append(text)
            if paper and col not in BEYOND_PAPER:
                pv = "–" if value is None else f"{value:.2f}"
                md += [pv, _diff(cell.mean, value)]
                plain += [pv, _diff(cell.mean, value)]
            table.cells.append(_record(name, row, col, "acc", cell, value, extractor or ""))
        table.rows.append(md)
        table.plain.append(plain)
    return table


def multilabel_table(index: Index, name: str = "table4") -> Table | None:
    """Table 4: top1→1, top1→L, top5→1, top5→L per method and benchmark, the relative gain over
    top1→1 in parentheses, the paper's numbers and the differences."""
    paper = paper_tables().get(name, {})
    runs = index.clustering.get(name, {})
    if not runs and name not in index.problems:
        return None
    labels = [label for _, label in MULTI_LABEL]
    header = ["benchmark", "method", *labels, *(f"{x} (paper)" for x in labels),
              *(f"Δ {x}" for x in labels)]  # fmt: skip
    table = Table(name, _title(name), header, [], [], [])
    for row in list(paper) + sorted(r for r in runs if r not in paper):
        meta = paper[row].meta if row in paper else {}
        methods_here = runs.get(row, {})
        extractor = _row_extractor(methods_here, meta)
        bench = meta.get("label", row)
        beyond = [m for m in BEYOND_PAPER if m in methods_here]
        if beyond and BEYOND_NOTE not in table.notes:
            table.notes.append(BEYOND_NOTE)
        for col in (*PAPER_METHODS, *beyond, PROBING):
            source = (
                index.probe_runs(row, extractor) if col == PROBING else methods_here.get(col, [])
            )
            cells = [
                _cell(source, m, index.problems.get(name, []), row, col) for m, _ in MULTI_LABEL
            ]
            top1 = cells[0].mean
            ours, theirs, diffs = [], [], []
            paper_top1 = paper[row].values.get((col, "acc")) if row in paper else None
            for (metric, _), cell in zip(MULTI_LABEL, cells, strict=True):
                text = cell.text(1)
                if metric != "acc" and cell.mean is not None and top1:
                    text += f" ({100 * (cell.mean / top1 - 1):+.1f} %)"
                ours.append(text)
                value = paper[row].values.get((col, metric)) if row in paper else None
                gain = ""
                if metric != "acc" and value is not None and paper_top1:
                    gain = f" ({100 * (value / paper_top1 - 1):+.1f} %)"
                theirs.append("–" if value is None else f"{value:.1f}{gain}")
                diffs.append(_diff(cell.mean, value))
                table.cells.append(_record(name, row, col, metric, cell, value, extractor or ""))
            method = "Linear probing" if col == PROBING else _label(col)
            table.rows.append([bench, f"*{method}*" if col == PROBING else method,
                               *ours, *theirs, *diffs])  # fmt: skip
            table.plain.append([bench, method, *ours, *theirs, *diffs])
    return table


TITLES = {
    "table1": "Table 1: accuracies on imbalanced benchmarks (%)",
    "table2": "Table 2: accuracies of fine-grained benchmarks (%)",
    "table3": "Table 3: accuracies on model-based ImageNet21K subsets (%)",
    "table4": "Table 4: multi-label clustering accuracies (%)",
    "table5": "Table 5: frequency-based and coarse ImageNet21K benchmarks (%)",
}


def _title(name: str) -> str:
    return TITLES.get(name, f"{name}: clustering accuracy (%)")


def build_tables(sweep: Sweep) -> list[Table]:
    """Every table the runs fill: the paper's five, then one per other sweep name."""
    index = Index(sweep)
    names = sorted(set(index.clustering) | set(index.problems))
    out = []
    for name in sorted(names, key=lambda n: (n not in TITLES, n)):
        table = multilabel_table(index, name) if name == "table4" else accuracy_table(index, name)
        if table is not None:
            out.append(table)
    return out
