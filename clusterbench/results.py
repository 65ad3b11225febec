"""results.json: written atomically, so a failed run never leaves a partial file."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

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


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
