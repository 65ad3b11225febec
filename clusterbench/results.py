"""results.json: its schema (`RunResult`), how a command writes it (atomically, last) and how
readers find it; plus the printed metrics table.

Every command that scores something (run, probe, separability, zeroshot) builds one `RunResult`
and writes it; the report reads nothing else. A results.json holds: method, dataset, seed,
metrics (fractions in [0, 1], `METRIC_ORDER` plus cluster counts), the command's own sections
(e.g. `probing`), reliability (bins, or null), method_info (facts a method recorded),
dataset_summary, timings (seconds), artefacts (file names in the run directory), versions,
config (resolved).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterbench.core.atomic import write_json_atomic
from clusterbench.core.versions import library_versions

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

# What each command calls itself in results.json's `method` (clustering runs: the method's
# name), and how tables and figures label them.
PROBING, SEPARABILITY, ZEROSHOT = "probing", "separability", "clip_zeroshot"
SEPARABILITY_METRICS = ("l_align", "davies_bouldin", "silhouette")
LABELS = {"kmeans": "k-means", "temi": "TEMI", "scanv2": "SCANv2", "finch": "FINCH",
          "turtle": "TURTLE", PROBING: "Probing"}  # fmt: skip
# A clustering method followed by refine=self_label is a column of its own: "<method>+self_label".
SELF_LABEL = "+self_label"
CLUSTERING = ("kmeans", "temi", "scanv2", "turtle", "finch")
LABELS.update({f"{m}{SELF_LABEL}": f"{LABELS[m]} + self-label" for m in CLUSTERING})
# Clustering methods the paper did not run: their columns carry a dagger and no paper number.
BEYOND_PAPER = ("finch", "turtle", *(f"{m}{SELF_LABEL}" for m in CLUSTERING))


def method_key(result: dict) -> str:
    """The report's column of a run: its method, with "+self_label" when refine=self_label ran
    after it (results.json `method_info.refine`)."""
    refined = bool((result.get("method_info") or {}).get("refine"))
    return f"{result['method']}{SELF_LABEL}" if refined else str(result["method"])


def start_run(cfg: Any) -> int:
    """The head of every scoring command: config types checked before any data is read, then
    every generator seeded from `cfg.seed`; returns the seed."""
    from lightning.pytorch import seed_everything

    from clusterbench.core.config import check_config
    from clusterbench.core.device import check_device

    check_config(cfg)
    check_device(cfg)
    seed = int(cfg.seed)
    seed_everything(seed, workers=True, verbose=False)
    return seed


@dataclass
class RunResult:
    """What one command run found, in the order results.json lists it.

    `sections` are a command's own top-level entries (probing's `probing`), placed after
    `metrics`. `started` is the `time.perf_counter()` at the run's start: `timings.total_s`.
    """

    method: str
    dataset: str
    seed: int
    metrics: dict
    method_info: dict
    dataset_summary: dict
    config: Any  # the composed DictConfig (resolved on writing) or a plain dict
    timings: dict[str, float] = field(default_factory=dict)
    reliability: dict | None = None
    artefacts: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)
    started: float | None = None

    def payload(self) -> dict:
        from omegaconf import DictConfig, OmegaConf

        timings = dict(self.timings)
        if self.started is not None and "total_s" not in timings:
            timings["total_s"] = time.perf_counter() - self.started
        config = self.config
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        return {
            "method": self.method,
            "dataset": self.dataset,
            "seed": int(self.seed),
            "metrics": self.metrics,
            **self.sections,
            "reliability": self.reliability,
            "method_info": self.method_info,
            "dataset_summary": self.dataset_summary,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "artefacts": self.artefacts,
            "versions": library_versions(),
            "config": config,
        }

    def write(self, run_dir: Path) -> dict:
        """Write `run_dir/results.json` (atomically, last) and return what was written."""
        payload = self.payload()
        write_results(run_dir, payload)
        return payload


def write_results(run_dir: Path, payload: dict) -> Path:
    """Write `run_dir/results.json` atomically; a run calls it last, so a failed run has none."""
    missing = [key for key in RESULT_KEYS if key not in payload]
    if missing:
        raise ValueError(f"results payload lacks {missing}")
    return write_json_atomic(Path(run_dir) / RESULTS_FILE, payload)


def problem_of(result: object) -> str | None:
    """Why a parsed results.json cannot be aggregated (None: it can).

    Checked: the keys every run writes, their types, and the metrics of `METRIC_ORDER` as
    finite fractions in [0, 1]: a file written in percent, or with a NaN, would otherwise be
    averaged into a table cell as if it were a result.
    """
    if not isinstance(result, dict):
        return f"not a JSON object but {type(result).__name__}"
    missing = [k for k in ("dataset", "method", "seed", "metrics") if k not in result]
    if missing:
        return f"lacks {', '.join(missing)}"
    for key in ("dataset", "method"):
        if not isinstance(result[key], str):
            return f"{key}={result[key]!r}: expected a string"
    if not isinstance(result["seed"], int) or isinstance(result["seed"], bool):
        return f"seed={result['seed']!r}: expected an integer"
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        return f"metrics is {type(metrics).__name__}, expected an object"
    for key in METRIC_ORDER:
        value = metrics.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"metrics.{key}={value!r}: expected a number"
        if not math.isfinite(value):
            return f"metrics.{key} is {value}: not a finite number"
        if not 0 <= value <= 1:
            return f"metrics.{key}={value}: metrics are fractions in [0, 1] (written in percent?)"
    return None


def iter_results(roots: list[Path], skipped: list[str] | None = None) -> Iterator[dict]:
    """Every readable, well-formed results.json below the given directories, in path order.

    A file that is not JSON or fails `problem_of` is left out and described in `skipped`
    ("<file>: <why>"), so one broken run never hides the others nor spoils an average.
    """
    for root in roots:
        for file in sorted(Path(root).rglob(RESULTS_FILE)):
            try:
                result = json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                reason = f"not readable JSON ({exc})"
            else:
                reason = problem_of(result)
                if reason is None:
                    result.setdefault("_file", str(file))
                    yield result
                    continue
            if skipped is not None:
                skipped.append(f"{file}: {reason}")


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
