"""results.json: its schema, how a run writes it (atomically, last) and how readers find it;
plus the printed metrics table and the library versions a run records.

A results.json holds: method, dataset, seed, metrics (fractions in [0, 1], `METRIC_ORDER` plus
cluster counts), reliability (bins, or null), method_info (facts a method recorded), dataset_summary,
timings (seconds), artefacts (file names in the run directory), versions, config (resolved).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clusterbench.atomic import write_json_atomic

LIBRARIES = (
    "clusterbench",
    "torch",
    "lightning",
    "faiss-cpu",
    "faiss-gpu",
    "numpy",
    "scipy",
    "scikit-learn",
    "torchmetrics",
    "hydra-core",
    "timm",
    "open_clip_torch",
)
METRIC_ORDER = (
    "acc",
    "nmi",
    "ari",
    "top5_acc",
    "top1_L_acc",
    "top5_L_acc",
    "mean_confidence",
    "ece",
)


RESULT_KEYS = (
    "method",
    "dataset",
    "seed",
    "metrics",
    "reliability",
    "method_info",
    "dataset_summary",
    "timings",
    "artefacts",
    "versions",
    "config",
)
RESULTS_FILE = "results.json"


def write_results(run_dir: Path, payload: dict) -> Path:
    """Write `run_dir/results.json` atomically; a run calls it last, so a failed run has none."""
    missing = [key for key in RESULT_KEYS if key not in payload]
    if missing:
        raise ValueError(f"results payload lacks {missing}")
    return write_json_atomic(Path(run_dir) / RESULTS_FILE, payload)


def iter_results(roots: list[Path], skipped: list[str] | None = None) -> Iterator[dict]:
    """Every readable results.json below the given directories, in path order.

    A file that is not JSON or lacks the keys every run writes is left out and described in
    `skipped` ("<file>: <why>"), so one broken run never hides the others.
    """
    for root in roots:
        for file in sorted(Path(root).rglob(RESULTS_FILE)):
            try:
                result = json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                reason = f"not readable JSON ({exc})"
            else:
                missing = [k for k in ("dataset", "method", "seed", "metrics") if k not in result]
                if isinstance(result, dict) and not missing:
                    result.setdefault("_file", str(file))
                    yield result
                    continue
                reason = f"lacks {', '.join(missing)}" if isinstance(result, dict) else "not a dict"
            if skipped is not None:
                skipped.append(f"{file}: {reason}")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def print_metrics(metrics: dict, title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in METRIC_ORDER:
        if key in metrics:
            table.add_row(
                key, f"{100 * metrics[key]:.2f} %" if key != "ece" else f"{metrics[key]:.4f}"
            )
    for key in ("num_clusters", "num_classes", "empty_clusters"):
        if key in metrics:
            table.add_row(key, str(metrics[key]))
    (console or Console()).print(table)
