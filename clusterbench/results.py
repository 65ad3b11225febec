"""What a run reports: library versions and the printed metrics table (results.json itself is
written by `atomic.write_json_atomic`)."""

from __future__ import annotations

import platform
from importlib import metadata

from rich.console import Console
from rich.table import Table

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
