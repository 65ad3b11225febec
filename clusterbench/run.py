"""One clustering run: view -> (neighbours) -> method -> predictions -> metrics -> results.json."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from clusterbench.core.config import build
from clusterbench.core.device import build_trainer
from clusterbench.core.errors import ConfigError
from clusterbench.core.tracking import build_loggers, close_loggers, log_run, where_logged
from clusterbench.data.spaces import build_view
from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.assignments import Written, write_assignments
from clusterbench.evaluation.evaluate import evaluate_view
from clusterbench.evaluation.label_free import (
    LabelFreeSettings,
    describe_label_free,
    label_free_scores,
)
from clusterbench.evaluation.plots import (
    confidence_histogram,
    k_estimation_curve,
    reliability_diagram,
)
from clusterbench.methods.k_estimation import AUTO, against_levels, estimate_num_clusters
from clusterbench.methods.task import ClusteringTask, RequestedK
from clusterbench.results import RunResult, print_metrics, start_run


def wants_estimate(requested: RequestedK | str) -> bool:
    """`method.num_clusters=auto`: K is estimated before the method trains. (check_config
    catches other strings first where the method annotates `num_clusters: RequestedK`.)"""
    if isinstance(requested, str) and requested != AUTO:
        raise ConfigError(
            f"method.num_clusters={requested!r} (str): expected int or 'auto' or null"
        )
    return requested == AUTO


def resolve_num_clusters(requested: int | None, view: BenchmarkView) -> int:
    if requested is None and not view.labelled:
        raise ConfigError(
            f"dataset {view.name} has no labels, so the number of clusters is not known: "
            "set method.num_clusters=K, or method.num_clusters=auto to estimate it"
        )
    k = view.num_classes if requested is None else int(requested)
    if k < 2:
        raise ConfigError(f"method.num_clusters={k}: clustering needs at least 2 clusters")
    if len(view.train) < k:
        origin = ""
        if requested is None:  # the number of classes; without class names it is max label + 1
            origin = (
                f" (the number of classes: {k} = 1 + the largest label"
                + (
                    ", as the store has no classes.txt; labels must be 0..C-1"
                    if not view.class_names
                    else ""
                )
                + ")"
            )
        raise ConfigError(
            f"dataset {view.name} has {len(view.train)} training samples, fewer than "
            f"num_clusters={k}{origin}; lower method.num_clusters or use more data"
        )
    return k


def estimate_k(estimator, task: ClusteringTask, cfg: DictConfig, view: BenchmarkView,
               artefacts: dict, console: Console) -> int:  # fmt: skip
    """`num_clusters=auto`: the estimate (recorded with its curve and against every level of
    classes the view knows) becomes the task's number of clusters."""
    console.print(f"estimating the number of clusters ({estimator.name})")
    found = estimate_num_clusters(estimator, task, lambda k: build(cfg.method, num_clusters=k))
    num_clusters = resolve_num_clusters(found.k, view)
    task.num_clusters = num_clusters
    levels = view.known_levels()
    task.run_dir.mkdir(parents=True, exist_ok=True)
    task.info["k_estimation"] = {**found.describe(), **against_levels(found.k, levels)}
    artefacts["k_estimation_png"] = k_estimation_curve(
        task.info["k_estimation"], levels, task.run_dir / "k_estimation.png",
        f"{estimator.name} on {view.name}",
    ).name  # fmt: skip
    console.print(
        f"estimated K = {num_clusters} ({found.criterion}, {len(found.candidates)} candidates, "
        f"{found.details['seconds']:.1f} s)"
    )
    return num_clusters


def predict_splits(cfg: DictConfig) -> list[str]:
    """`predict.splits`, checked at the head of the run (not after training)."""
    splits = list(cfg.get("predict", {}).get("splits", ["train", "val"]))
    if any(s not in ("train", "val") for s in splits):
        raise ConfigError(f"predict.splits={splits}: expected train and/or val")
    return splits


def export_assignments(
    method, view: BenchmarkView, splits: list[str], run_dir: Path, num_clusters: int
) -> tuple[dict, dict[str, Written]]:
    """`assignments/<split>.parquet` for every split in `splits` (rows, clusters, top-k,
    confidence, image paths), and the fitted model the `assign` of new rows needs."""
    artefacts: dict = {}
    written: dict[str, Written] = {}
    for split in splits:
        rows = view.train if split == "train" else view.val
        if len(rows) == 0 or not hasattr(method, "assign"):
            continue
        own = split == "train" and hasattr(method, "train_assigned")  # FINCH's own partition
        written[split] = write_assignments(
            run_dir / "assignments" / f"{split}.parquet",
            method.train_assigned() if own else method.assign(rows),
            len(rows),
            num_clusters,
            paths=view.files(split),
        )
    if written:
        artefacts["assignments"] = {s: w.describe(run_dir) for s, w in written.items()}
    if hasattr(method, "save"):
        artefacts["model"] = method.save(run_dir)
    return artefacts, written


def run(
    cfg: DictConfig, run_dir: Path, console: Console | None = None, callbacks: list | None = None
) -> dict:
    """Run the configured method on the configured dataset; return the results payload.

    `callbacks` are extra Lightning callbacks for methods that train (tests, user hooks)."""
    console = console or Console()
    start_run(cfg)  # wrong types fail here, before any data is read
    splits = predict_splits(cfg)
    settings = build(cfg.label_free) if cfg.get("label_free") else LabelFreeSettings()
    timings: dict[str, float] = {}

    start = time.perf_counter()
    # The trainer factory first: a GPU trainer on a machine without one fails before any data.
    make_trainer = build_trainer(cfg.trainer) if cfg.get("trainer") is not None else None
    refiner = build(cfg.refine) if cfg.get("refine") else None  # refine=self_label, checked
    view: BenchmarkView = build_view(cfg.dataset)
    timings["load_dataset_s"] = time.perf_counter() - start
    method = build(cfg.method)
    # One door: the method's own setting (its config), resolved against the view.
    requested = getattr(method, "num_clusters", None)
    estimator = build(cfg.k_estimation) if wants_estimate(requested) else None
    num_clusters = 0 if estimator else resolve_num_clusters(requested, view)

    neighbours = build(cfg.knn)(
        rows=view.train,
        fingerprint=view.fingerprint,
        cache_dir=cfg.paths.cache_dir,
        device=cfg.device,
        seed=int(cfg.seed),
    )
    loggers = build_loggers(cfg.get("logger"))
    task = ClusteringTask(
        view=view,
        num_clusters=num_clusters,
        seed=int(cfg.seed),
        device=cfg.device,
        run_dir=run_dir,
        neighbours=neighbours,
        loggers=loggers,
        make_trainer=make_trainer,
        callbacks=list(callbacks or []),
    )
    status = "failed"
    artefacts: dict = {}
    try:
        if estimator is not None:  # its cost beside the fit's (timings.k_estimation_s)
            t0 = time.perf_counter()
            num_clusters = estimate_k(estimator, task, cfg, view, artefacts, console)
            timings["k_estimation_s"] = time.perf_counter() - t0
        console.print(
            f"[bold]{method.name}[/] on [bold]{view.name}[/]: {len(view.train):,} train + "
            f"{len(view.val):,} val rows x {view.dim}, {num_clusters} clusters"
            + ("" if view.labelled else " (unlabelled)")
        )
        t0 = time.perf_counter()
        predictions = method.fit_predict(task)
        if predictions is None:  # a non-zero DDP rank: rank 0 evaluates and writes
            status = "success"
            return {}
        timings["fit_predict_s"] = time.perf_counter() - t0
        if neighbours.seconds is not None:  # mined during fit_predict, counted in it too
            timings["knn_s"] = neighbours.seconds
            task.info["knn_from_cache"] = neighbours.from_cache
        t0 = time.perf_counter()
        evaluation = evaluate_view(predictions, view) if view.labelled and len(view.val) else {}
        timings["evaluate_s"] = time.perf_counter() - t0
        if refiner is not None:  # its predictions replace the method's; method_info.refine
            t0 = time.perf_counter()
            method, predictions, evaluation = refiner.refine(method, predictions, evaluation, task)
            timings["refine_s"] = time.perf_counter() - t0
        metrics = evaluation.get("metrics", {"num_clusters": predictions.num_clusters})
        t0 = time.perf_counter()
        exported, written = export_assignments(
            method, view, splits, run_dir, predictions.num_clusters
        )
        artefacts.update(exported)
        timings["assign_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        label_free = {}
        if "train" in written:
            label_free = label_free_scores(
                settings, view.train, written["train"].top1, written["train"].sizes,
                neighbours=neighbours.table if neighbours.seconds is not None else None,
            )  # fmt: skip
            if hasattr(method, "label_free"):  # method-specific, e.g. the heads' agreement
                label_free.update(method.label_free(view.train, 5000, int(cfg.seed)))
        timings["label_free_s"] = time.perf_counter() - t0
        if evaluation and predictions.confidence is not None:
            title = f"{method.name} on {view.name}"
            artefacts["reliability_png"] = reliability_diagram(
                evaluation["reliability"], metrics["ece"], run_dir / "reliability.png", title
            ).name
            artefacts["confidence_png"] = confidence_histogram(
                predictions.confidence, run_dir / "confidence_hist.png", title
            ).name
        result = RunResult(
            method=method.name,
            dataset=view.name,
            seed=int(cfg.seed),
            metrics=metrics,
            sections={"label_free": label_free} if label_free else {},
            reliability=evaluation.get("reliability"),
            method_info=task.info,
            dataset_summary=view.summary(),
            timings=timings,
            started=start,
            artefacts=artefacts,
            config=cfg,
        )
        log_run(loggers, cfg, metrics)
        payload = result.write(run_dir)  # last: a failed run leaves none
        status = "success"
    finally:
        logged = where_logged(loggers) if status == "success" else []
        close_loggers(loggers, status)
    print_metrics(metrics, f"{method.name} on {view.name} (seed {cfg.seed})", console)
    if label_free:
        console.print(describe_label_free(label_free))
    console.print(f"results: {run_dir / 'results.json'}")
    if "train" in written:  # the clusters as pages a person can browse (docs/atlas.md)
        console.print(f"atlas: python -m clusterbench.explore {run_dir}", soft_wrap=True)
    for line in logged:
        console.print(line, soft_wrap=True)
    return payload
