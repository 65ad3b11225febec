"""Reading finished sweeps: every results.json (one reader, `results.iter_results`), the job
directories that have none, and the grouping of results into experiments.

A job directory is one Hydra wrote (it holds `.hydra/`); one without results.json is a
missing run (failed, killed or still running), reported with what its config says it was.
Submitit's own logs (`.submitit/`) name jobs that failed before Hydra made their directory.
The grouping by experiment (everything in the config except the seed and where outputs go)
is what `python -m clusterbench aggregate` prints, and what keeps two settings apart in a cell.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from clusterbench.results import (
    METRIC_ORDER,
    PROBING,
    RESULTS_FILE,
    SEPARABILITY,
    ZEROSHOT,
    iter_results,
    method_key,
)

# Config keys that say where a run writes or how it reports, not what it computes.
NOT_EXPERIMENT = ("seed", "paths", "logger", "hydra", "trainer.enable_progress_bar",
                  "trainer.log_every_n_steps", "method.resume", "paper.row",
                  "label_free.seed")  # fmt: skip


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
    return {**settings, "dataset": result["dataset"], "method": method_key(result)}


def experiment_key(result: dict) -> tuple:
    return tuple(
        sorted((k, json.dumps(v, sort_keys=True)) for k, v in experiment_of(result).items())
    )


def group(results: list[dict]) -> dict[tuple, list[dict]]:
    """Results of the same experiment together (seeds are what differs inside a group)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for result in results:
        groups[experiment_key(result)].append(result)
    return dict(groups)


def collect(dirs: list[Path], skipped: list[str] | None = None) -> dict[tuple, list[dict]]:
    """Every readable results.json under `dirs`, grouped by experiment."""
    return group(list(iter_results(dirs, skipped)))


def differing(groups: dict[tuple, list[dict]]) -> dict[tuple, str]:
    """Per group: the settings that tell it apart from groups with its dataset and method."""
    label: dict[tuple, str] = {}
    for key in groups:
        mine = dict(key)
        peers = [dict(k) for k in groups if k != key and _same_cell(dict(k), mine)]
        names = sorted({n for p in peers for n in _differences(p, mine)})
        label[key] = " ".join(_describe(n, mine) for n in names)
    return label


def _differences(peer: dict, mine: dict) -> set[str]:
    """Keys that differ; where a config group's `_target_` differs, that key alone (the
    group's other keys differ because it is another class, which the target says)."""
    names = {n for n in set(peer) | set(mine) if peer.get(n) != mine.get(n)}
    swapped = {n.removesuffix("._target_") for n in names if n.endswith("._target_")}
    return {n for n in names if n.endswith("._target_") or n.rsplit(".", 1)[0] not in swapped}


def _describe(name: str, mine: dict) -> str:
    if name not in mine:
        return f"{name}=-"
    value = json.loads(mine[name])
    if name.endswith("._target_"):  # k_estimation=FinchLevels
        return f"{name.removesuffix('._target_')}={str(value).rsplit('.', 1)[-1]}"
    return f"{name}={value}"


def _same_cell(a: dict, b: dict) -> bool:
    return a["dataset"] == b["dataset"] and a["method"] == b["method"]


def mean_std(values: list[float]) -> dict[str, float | None]:
    """Mean and population std (ddof=0) over seeds, the convention of every table here; the
    std of one seed is None: its spread is unknown, not zero."""
    std = float(np.std(values)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def summarize(groups: dict[tuple, list[dict]]) -> list[dict]:
    """One row per experiment: seeds and mean/std per metric."""
    rows = []
    labels = differing(groups)
    order = sorted(groups, key=lambda k: (dict(k)["dataset"], dict(k)["method"], labels[k]))
    for key in order:
        results = groups[key]
        row = {
            "dataset": results[0]["dataset"],
            "method": method_key(results[0]),
            "settings": labels[key],
            "seeds": sorted(r["seed"] for r in results),
            "files": [r["_file"] for r in results],
        }
        for metric in METRIC_ORDER:
            values = [r["metrics"][metric] for r in results if r["metrics"].get(metric) is not None]
            if values:
                stats = mean_std(values)
                row[metric] = {"mean": stats["mean"], "std": stats["std"]}
        row["seed_nmi"] = seed_stability(results)
        rows.append(row)
    return rows


def seed_stability(results: list[dict]) -> float | None:
    """Mean pairwise NMI between the seeds' train assignments (`assignments/train.parquet`
    beside each results.json): 1 = every seed found the same clusters. None below two seeds
    with assignments, or when their row counts differ."""
    import pyarrow.parquet as pq
    from sklearn.metrics import normalized_mutual_info_score

    clusters = []
    for result in results:
        file = Path(result["_file"]).parent / "assignments" / "train.parquet"
        if file.is_file():
            clusters.append(pq.read_table(file, columns=["cluster"]).column(0).to_numpy())
    if len(clusters) < 2 or len({c.size for c in clusters}) > 1:
        return None
    pairs = [normalized_mutual_info_score(a, b)
             for i, a in enumerate(clusters) for b in clusters[i + 1 :]]  # fmt: skip
    return float(np.mean(pairs))


# --- runs of a sweep -------------------------------------------------------------------------


@dataclass
class Run:
    """One results.json, with the keys the report files it under."""

    result: dict
    table: str  # config paper.table, else the name of the sweep directory
    row: str  # the benchmark (dataset name)
    method: str
    seed: int
    extractor: str
    dir: Path

    @property
    def metrics(self) -> dict:
        return self.result["metrics"]

    def setting(self, key: str, default=None):
        """A dotted config key of the run (e.g. method.knn), or default."""
        node = self.result.get("config") or {}
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


@dataclass
class Problem:
    """A job of a sweep that gave no usable result: missing (no results.json), unreadable
    (a corrupt results.json) or failed (an error in its logs)."""

    kind: str
    path: Path
    reason: str
    table: str | None = None
    row: str | None = None
    method: str | None = None
    seed: int | None = None


@dataclass
class Sweep:
    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def kind_of(config: dict) -> str:
    """The method a config runs: a clustering method's name, or the producer it configures."""
    if "probe" in config:
        return PROBING
    if "separability" in config:
        return SEPARABILITY
    if "zeroshot" in config:
        return ZEROSHOT
    method = config.get("method")
    return str(method.get("name")) if isinstance(method, dict) else "?"


def _table_of(config: dict, job_dir: Path) -> str:
    paper = config.get("paper") if isinstance(config.get("paper"), dict) else {}
    table = paper.get("table")
    if isinstance(table, str) and table and "${" not in table and table != "???":
        return table
    return job_dir.parent.name or job_dir.name


def extractor_of(config: dict) -> str:
    extractor = config.get("extractor")
    name = extractor.get("name") if isinstance(extractor, dict) else None
    return str(name) if name else "none"


def unless_unresolved(value):
    """A config value that is not an unresolved interpolation, else None."""
    return None if isinstance(value, str) and "${" in value else value


def _job_config(job_dir: Path) -> dict:
    """The config Hydra saved before the job ran (`.hydra/config.yaml`), interpolations
    unresolved; {} when unreadable."""
    try:
        loaded = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _error_line(job_dir: Path) -> str | None:
    """The last line of the job's logs that says why it stopped, if any."""
    for log in sorted(job_dir.glob("*.log")) + sorted(job_dir.glob("*.err")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [ln.strip() for ln in lines if "error" in ln.lower() or "Traceback" in ln]
        if hits:
            return f"{hits[-1][:200]} ({log.name})"
    return None


def job_dirs(root: Path) -> list[Path]:
    """Directories under `root` (itself included) that Hydra made for a job."""
    found = [p.parent for p in root.rglob(".hydra") if p.is_dir()]
    return sorted({d for d in found if "wandb" not in d.parts})


def _submitit_failures(root: Path) -> list[Problem]:
    """Jobs whose submitit stderr log ends in an error (they may have no job directory)."""
    out = []
    for log in sorted(root.rglob(".submitit/**/*_log.err")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [ln.strip() for ln in lines if ln.startswith("error:") or "Error" in ln]
        if hits:
            out.append(Problem("failed", log, f"submitit log: {hits[-1][:200]}"))
    return out


def _never_started(manifest: Path) -> list[Problem]:
    """Jobs a basic-launcher sweep asked for (its multirun.yaml) that made no job directory."""
    root = manifest.parent
    started = len([d for d in job_dirs(root) if d.parent == root])  # its own jobs only
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = yaml.safe_load(manifest.read_text())["hydra"]["overrides"]["task"]
        parsed = OverridesParser.create().parse_overrides(task)
        batches = BasicSweeper.split_arguments(parsed, None)
        asked = sum(len(b) for b in batches)
    except Exception as exc:  # a manifest from another Hydra version: say so, go on
        return [Problem("unreadable", manifest, f"cannot expand the sweep ({exc})")]
    if asked <= started:
        return []
    return [
        Problem(
            "missing",
            root,
            f"{asked - started} of the {asked} jobs of this sweep ({' '.join(task)}) "
            "never made a job directory",
        )
    ]


def read_sweeps(dirs: list[Path]) -> Sweep:
    """All runs under `dirs`, and every job of them that has no usable result."""
    sweep = Sweep()
    skipped: list[str] = []
    seen: set[Path] = set()
    for result in iter_results(dirs, skipped):
        file = Path(result["_file"])
        if file in seen:
            continue
        seen.add(file)
        config = result.get("config") or {}
        sweep.runs.append(
            Run(
                result=result,
                table=_table_of(config, file.parent),
                row=str(result["dataset"]),
                method=method_key(result),
                seed=int(result["seed"]),
                extractor=extractor_of(config),
                dir=file.parent,
            )
        )
    for line in skipped:
        file, _, reason = line.partition(": ")
        sweep.problems.append(Problem("unreadable", Path(file).parent, reason))
    broken = {p.path for p in sweep.problems}
    done = {r.dir for r in sweep.runs}
    for root in dirs:
        jobs = job_dirs(Path(root))
        for job in jobs:
            if job in done or job in broken or (job / RESULTS_FILE).exists():
                continue
            config = _job_config(job)
            dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
            seed = unless_unresolved(config.get("seed"))
            sweep.problems.append(
                Problem(
                    "missing",
                    job,
                    _error_line(job)
                    or "no results.json (the run failed, was killed or is running)",
                    table=_table_of(config, job),
                    row=unless_unresolved(dataset.get("name")),
                    method=kind_of(config),
                    seed=int(seed) if isinstance(seed, int) else None,
                )
            )
        sweep.problems += _submitit_failures(Path(root))
        for manifest in sorted(Path(root).rglob("multirun.yaml")):
            sweep.problems += _never_started(manifest)
    return sweep
