"""One probing run: view -> resident features -> the stacked grid -> results.json and the
per-class accuracy file the model-based benchmarks read.

Two numbers, never to be confused:
- `metrics.acc`, the paper's (appendix C.3): the best val accuracy over the grid. It selects
  on the split it reports, so it is an optimistic upper bound.
- `metrics.acc_holdout_selected`, the honest one: the grid is trained again on 90 % of train
  (`probe.holdout` = 0.1), the cell with the best accuracy on the held-out 10 % is chosen, and
  the full-train probe of that cell is evaluated once on val (its val accuracy played no part
  in the choice).

A plain loop, not Lightning: the features sit on one device and a step is one batched product
and one fused SGD update, so a framework's per-step hooks would cost as much as the step at
small shapes; ImageNet-21K (11M x 1024 fp16, 22 GB, plus 18 probes' weights) fits one 40 GB GPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from clusterbench.benchmarks.families.model_based import classes_digest, fallback_dir, tree_sidecar
from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.core.atomic import save_npy_atomic, write_json_atomic
from clusterbench.core.config import build
from clusterbench.core.device import torch_device
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import to_device
from clusterbench.data.spaces import build_view
from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.metrics import in_label_sets
from clusterbench.producers.probe.data import Normalizer, feature_dtype
from clusterbench.producers.probe.grid import (
    FALLING_TOLERANCE,
    Cell,
    ProbeSettings,
    TrainedGrid,
    check_weight_budget,
    predict_topk,
    train_probes,
)
from clusterbench.results import PROBING, RunResult, print_metrics, start_run

SELECTIONS = ("acc", "acc_holdout_selected")
WRITE_MODES = ("auto", "true", "false")
TOPK = 5


def scores(top: torch.Tensor, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-probe top-1 and top-5 accuracy from (P, N, k) predictions."""
    top = top.numpy()
    return {
        "acc": (top[:, :, 0] == labels).mean(1),
        "top5_acc": (top == labels[None, :, None]).any(2).mean(1),
    }


def probe_metrics(top: np.ndarray, view: BenchmarkView) -> dict:
    """top-1, top-5 and (views with label sets) top1->L / top5->L of one probe, (N, k)."""
    labels = view.val_labels
    out = {
        "acc": float((top[:, 0] == labels).mean()),
        "top5_acc": float((top == labels[:, None]).any(1).mean()),
    }
    if view.val_label_sets is not None:
        out["top1_L_acc"] = float(in_label_sets(top[:, 0], view.val_label_sets).mean())
        hit = np.zeros(labels.shape[0], dtype=bool)
        for j in range(top.shape[1]):
            hit |= in_label_sets(top[:, j], view.val_label_sets)
        out["top5_L_acc"] = float(hit.mean())
    return out


def per_class_accuracy(top1: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) val accuracy per class; NaN for a class without val samples."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=(top1 == labels).astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / counts, np.nan)


def tree_classes(view: BenchmarkView, tree: Tree) -> np.ndarray | None:
    """(C,) tree class id of each view class, or None when the view's classes are not tree
    classes (a dataset outside ImageNet-21K, coarse labels that are not classes)."""
    names = view.class_names
    if names is None or len(names) != view.num_classes:
        return None
    ids = np.empty(len(names), dtype=np.int64)
    for i, wnid in enumerate(names):
        try:
            node = tree.node(wnid)
        except KeyError:
            return None
        if not tree.is_class(node):
            return None
        ids[i] = node
    return ids


def best(values: np.ndarray, diverged: np.ndarray) -> int:
    """Index of the highest value among the probes that did not diverge (first on ties)."""
    return int(np.argmax(np.where(diverged, -np.inf, values)))


def accuracy_name(node: DictConfig, extractor: str) -> str | None:
    """The model name the accuracy file is saved under (`clip` for CLIP-1K, ...)."""
    if node.get("name"):
        return str(node.name)
    names = dict(node.get("names") or {})
    if extractor in names:
        return str(names[extractor])
    return None if extractor in ("none", "", None) else extractor


def write_accuracy_file(
    acc: np.ndarray, store: Path, fingerprint: str, cache_dir: str, name: str, info: dict
) -> tuple[Path, str | None]:
    """Save `<store>/probe_accuracy/<name>.npy` plus its tree sidecar; a store that cannot be
    written gets them under the cache dir instead. Returns (file, why it moved or None)."""
    target = store / "probe_accuracy" / f"{name}.npy"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(target, acc)
        write_json_atomic(tree_sidecar(target), info)
        return target, None
    except OSError as exc:
        moved = fallback_dir(cache_dir, fingerprint) / f"{name}.npy"
        save_npy_atomic(moved, acc)
        write_json_atomic(tree_sidecar(moved), info)
        return moved, f"{store} is not writable ({exc.strerror or exc})"


def holdout_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(fit rows, held-out rows): a seeded random `fraction` of train; None if either is empty."""
    size = int(round(fraction * n))
    if size < 1 or size >= n:
        return None
    order = np.random.default_rng([seed, 10]).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


def grid_table(grid: list[dict], chosen: int, honest: int | None) -> Table:
    table = Table(title="probe grid: val accuracy (held-out accuracy)")
    table.add_column("lr")
    table.add_column("weight decay")
    table.add_column("val", justify="right")
    table.add_column("held-out", justify="right")
    table.add_column("", justify="left")
    for i, row in enumerate(grid):
        marks = ("paper " if i == chosen else "") + ("holdout-selected" if i == honest else "")
        held = row.get("holdout_acc")
        table.add_row(
            f"{row['lr']:g}",
            f"{row['weight_decay']:g}",
            "diverged" if row["diverged"] else f"{100 * row['val_acc']:.2f} %",
            "" if held is None else f"{100 * held:.2f} %",
            marks,
        )
    return table


def edge_note(cell: Cell, settings: ProbeSettings, drop: float | None = None) -> str | None:
    """A warning when the grid, not the features, may set the number: the best cell has the
    grid's largest lr AND its training loss was still falling at the end (`drop`: the best
    probe's `TrainedGrid.loss_drop`, above FALLING_TOLERANCE). A best cell at the largest lr
    whose loss has flattened has converged, and is not flagged. `drop` None (one epoch,
    nothing to compare): judged on the lr alone."""
    if len(settings.lrs) < 2 or cell.lr != max(settings.lrs):
        return None
    if drop is not None and not drop > FALLING_TOLERANCE:
        return None
    remedies = "probe.lrs with larger values or more probe.epochs"
    if settings.normalize != "standardize":
        remedies = "probe.lrs with larger values, more probe.epochs or probe.normalize=standardize"
    return (
        f"the best cell has the grid's largest lr ({cell.lr:g}): the probes may be under-trained; "
        f"{remedies} may score higher (the paper's grid is kept by default)"
    )


def class_count_source(view: BenchmarkView) -> str:
    """Where the view's class count comes from: the store's classes.txt, or the view."""
    classes = view.store.classes
    if classes is not None and len(classes) == view.num_classes:
        return str(view.store.path / "classes.txt")
    return f"dataset {view.name}"


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict:
    """Probe the configured view with the whole grid; return the results payload."""
    console = console or Console()
    seed = start_run(cfg)  # wrong types fail here, before any data is read
    timings: dict[str, float] = {}
    start = time.perf_counter()
    view: BenchmarkView = build_view(cfg.dataset)
    view.store.require_labels("probe")  # it learns the classes
    settings: ProbeSettings = build(cfg.probe)
    out_cfg = cfg.accuracy_file
    selection = str(out_cfg.get("selection", "acc"))
    write_mode = str(out_cfg.get("write", "auto")).lower()
    if selection not in SELECTIONS or write_mode not in WRITE_MODES:
        raise ConfigError(
            f"accuracy_file.selection must be one of {SELECTIONS} and accuracy_file.write one of "
            f"{WRITE_MODES}; got {selection!r} and {write_mode!r}"
        )
    timings["load_dataset_s"] = time.perf_counter() - start
    c = int(view.num_classes)
    if len(view.val_labels) == 0:
        raise ConfigError(f"dataset {view.name} has no validation samples to score probes on")
    for split, labels in (("train", view.train_labels), ("val", view.val_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ConfigError(f"dataset {view.name}: {split} labels outside 0..{c - 1}")
    labels = (view.train_labels, view.val_labels)
    check_weight_budget(len(settings.cells), view.dim, c, class_count_source(view), labels)

    device = torch_device(str(cfg.device))
    t0 = time.perf_counter()
    dtype = feature_dtype(settings.feature_dtype, view.store.train.features.dtype)
    train = to_device(view.train, device, dtype, check_finite=f"dataset {view.name} train split")
    val = to_device(view.val, device, dtype, check_finite=f"dataset {view.name} val split")
    norm = Normalizer.fit(settings.normalize, train)
    norm.apply_(train)
    norm.apply_(val)
    y = torch.as_tensor(view.train_labels, dtype=torch.int64).to(device)
    timings["to_device_s"] = time.perf_counter() - t0
    cells = settings.cells
    console.print(
        f"[bold]linear probing[/] on [bold]{view.name}[/]: {len(view.train_labels):,} train / "
        f"{len(view.val_labels):,} val, {c} classes, dim {view.dim}; {len(cells)} probes "
        f"(lr x weight decay) trained at once on {device}, {settings.epochs} epochs"
    )

    t0 = time.perf_counter()
    full = train_probes(train, y, None, cells, c, settings, seed, "probes")
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    top = predict_topk(full.model, val, TOPK)
    val_scores = scores(top, view.val_labels)
    timings["evaluate_s"] = time.perf_counter() - t0
    chosen = best(val_scores["acc"], full.diverged)

    honest: int | None = None
    held: TrainedGrid | None = None
    holdout_acc = None
    split = holdout_rows(len(view.train_labels), settings.holdout, seed)
    if split is not None:
        t0 = time.perf_counter()
        fit, hold = (torch.as_tensor(a).to(device) for a in split)
        held = train_probes(train, y, fit, cells, c, settings, seed, "held-out-selection probes")
        hold_top = predict_topk(held.model, train, 1, rows=hold)[:, :, 0].numpy()
        holdout_acc = (hold_top == view.train_labels[split[1]]).mean(1)
        honest = best(holdout_acc, held.diverged | full.diverged)
        timings["holdout_train_s"] = time.perf_counter() - t0

    grid = [
        {
            **cell.as_dict(),
            "val_acc": None if full.diverged[i] else float(val_scores["acc"][i]),
            "val_top5_acc": None if full.diverged[i] else float(val_scores["top5_acc"][i]),
            "holdout_acc": None
            if holdout_acc is None or held is None or held.diverged[i]
            else float(holdout_acc[i]),
            "train_loss": float(full.train_loss[i]),
            "diverged": bool(full.diverged[i]),
        }
        for i, cell in enumerate(cells)
    ]
    top_np = top.numpy()
    paper = probe_metrics(top_np[chosen], view)
    metrics: dict = {
        **paper,
        "acc_holdout_selected": None if honest is None else float(val_scores["acc"][honest]),
        "num_classes": c,
        "num_probes": len(cells),
    }
    honest_metrics = None if honest is None else probe_metrics(top_np[honest], view)

    # Per-class val accuracy of the selected probe, in view order and (when the view's classes
    # are tree classes) in tree order for the model-based benchmarks.
    pick = chosen if selection == "acc" or honest is None else honest
    per_class = per_class_accuracy(top_np[pick, :, 0], view.val_labels, c)
    artefacts = {
        "per_class_accuracy_npy": save_npy_atomic(run_dir / "per_class.npy", per_class).name
    }
    tree = load_tree()
    ids = tree_classes(view, tree)
    accuracy_info: dict = {"selection": selection, **cells[pick].as_dict(), "file": None}
    name = accuracy_name(out_cfg, str(cfg.extractor.name))
    whole_tree = ids is not None and ids.size == tree.num_classes
    write = ids is not None and (write_mode == "true" or (write_mode == "auto" and whole_tree))
    if write and name is None:
        accuracy_info["note"] = (
            "no accuracy file written: extractor=none has no model name; set accuracy_file.name "
            "(clip, dinov2, sup) to write one"
        )
    elif write:
        acc_tree = np.full(tree.num_classes, np.nan)
        acc_tree[ids] = per_class
        info = {
            "num_classes": tree.num_classes,
            "classes_digest": classes_digest(tree),
            "dataset": view.name,
            "store": view.store.fingerprint,
            "extractor": str(cfg.extractor.name),
            **accuracy_info,
        }
        del info["file"]
        file, moved = write_accuracy_file(
            acc_tree, view.store.path, view.store.fingerprint, str(cfg.paths.cache_dir), name, info
        )
        accuracy_info.update(file=str(file), name=name)
        if moved:
            accuracy_info["note"] = f"{moved}; wrote {file} (the model-based benchmarks find it)"
            console.print(f"[yellow]{accuracy_info['note']}[/]")
        artefacts["per_class_tree_npy"] = save_npy_atomic(
            run_dir / "per_class_tree.npy", acc_tree
        ).name
    elif ids is None:
        accuracy_info["note"] = "view classes are not ImageNet-21K classes: view order only"
    else:
        accuracy_info["note"] = (
            "not the whole tree: no accuracy file written for the model-based benchmarks "
            "(accuracy_file.write=true writes it, other classes NaN)"
        )
    absent = int(np.isnan(per_class).sum())
    drop = full.loss_drop()
    edge = edge_note(cells[chosen], settings, None if drop is None else float(drop[chosen]))

    timings["total_s"] = time.perf_counter() - start
    probing = {
        "acc": metrics["acc"],
        "acc_holdout_selected": metrics["acc_holdout_selected"],
        "selected": cells[chosen].as_dict(),
        "holdout_selected": None if honest is None else cells[honest].as_dict(),
        "acc_means": "best val accuracy over the grid (paper, appendix C.3): selects on val",
        "acc_holdout_selected_means": (
            f"grid cell with the best accuracy on a held-out {settings.holdout:.0%} of train "
            "(probes trained on the rest), its full-train probe evaluated once on val"
        ),
        "holdout_selected_metrics": honest_metrics,
    }
    payload = RunResult(
        method=PROBING,
        dataset=view.name,
        seed=seed,
        metrics=metrics,
        sections={"probing": probing},
        method_info={
            "grid": grid,
            "settings": {
                **{k: getattr(settings, k) for k in settings.__dataclass_fields__},
                "device": str(device),
                "bf16": full.bf16,
                "feature_dtype": str(dtype).removeprefix("torch."),
                "steps": full.steps,
            },
            "accuracy_file": accuracy_info,
            "val_classes_absent": absent,
            "grid_edge": edge,
        },
        dataset_summary=view.summary(),
        timings=timings,
        artefacts=artefacts,
        config=cfg,
    ).write(run_dir)
    console.print(grid_table(grid, chosen, honest))
    print_metrics(metrics, f"probing on {view.name} (seed {seed})", console)
    if metrics["acc_holdout_selected"] is not None:
        console.print(
            f"acc (paper, best val over the grid): {100 * metrics['acc']:.2f} %; "
            f"acc_holdout_selected: {100 * metrics['acc_holdout_selected']:.2f} %"
        )
    if edge:  # results.json has the note; the console adds the evidence (loss_drop)
        if drop is not None:
            edge += f"; its loss still fell {100 * drop[chosen]:.2g} % an epoch (at the full lr)"
        console.print(f"[yellow]{edge}[/]")
    if absent:
        console.print(f"{absent} classes have no val samples: NaN in the per-class accuracies")
    if accuracy_info.get("file"):
        console.print(f"per-class accuracies ({name}): {accuracy_info['file']}")
    console.print(f"results: {run_dir / 'results.json'}")
    return payload
