"""One separability run: view -> one split's rows on the device -> L_align (kNN cache),
Davies-Bouldin, silhouette (seeded sample) -> results.json."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from clusterbench.core.config import build
from clusterbench.core.device import torch_device
from clusterbench.data.rows import to_device
from clusterbench.data.spaces import build_view
from clusterbench.data.view import BenchmarkView
from clusterbench.neighbours import mine_neighbours
from clusterbench.producers.probe.data import Normalizer, feature_dtype
from clusterbench.producers.separability.metrics import (
    METRICS,
    SeparabilitySettings,
    davies_bouldin,
    l_align,
    silhouette,
    silhouette_rows,
)
from clusterbench.results import SEPARABILITY, RunResult, start_run


def neighbour_table(cfg: DictConfig, view: BenchmarkView, split: str, k: int) -> tuple:
    """(N, k) kNN of the split's rows from the shared cache (mined on first use), and whether
    the cache answered."""
    index = build(cfg.knn)(
        rows=view.train,
        fingerprint=view.fingerprint,
        cache_dir=cfg.paths.cache_dir,
        device=cfg.device,
        seed=int(cfg.seed),
    )
    if split == "train":
        table = index.table(k)
        return table, index.from_cache
    return mine_neighbours(
        view.val,
        view.fingerprint,
        "val",
        max(k, int(index.k)),
        cfg.paths.cache_dir,
        index=index.index,
        nprobe=int(index.nprobe),
        device=str(cfg.device),
        chunk_size=int(index.chunk_size),
        seed=int(cfg.seed),
    )


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict:
    """Measure the configured view's class separability; return the results payload."""
    console = console or Console()
    seed = start_run(cfg)  # wrong types fail here, before any data is read
    timings: dict[str, float] = {}
    start = time.perf_counter()
    view: BenchmarkView = build_view(cfg.dataset)
    view.store.require_labels("separability")  # it measures how separable the classes are
    settings: SeparabilitySettings = build(cfg.separability)
    split = settings.split
    rows = view.train if split == "train" else view.val
    labels_np = view.train_labels if split == "train" else view.val_labels
    device = torch_device(str(cfg.device))
    timings["load_dataset_s"] = time.perf_counter() - start

    t0 = time.perf_counter()
    dtype = feature_dtype("auto", view.store.train.features.dtype)
    x = to_device(rows, device, dtype, check_finite=f"dataset {view.name} {split} split")
    labels = torch.as_tensor(labels_np, dtype=torch.int64).to(device)
    timings["to_device_s"] = time.perf_counter() - t0
    console.print(
        f"[bold]separability[/] of [bold]{view.name}[/] ({split}): {len(labels_np):,} rows, "
        f"{view.num_classes} classes, dim {view.dim}; {settings.distance}"
    )
    l2 = Normalizer("l2")
    if settings.normalize == "l2":
        l2.apply_(x)
    sample = silhouette_rows(len(labels_np), settings.silhouette_sample, seed)
    chunk, acc_dtype = settings.chunk_elements, settings.torch_dtype

    t0 = time.perf_counter()
    dbs = davies_bouldin(x, labels, acc_dtype, chunk)
    timings["davies_bouldin_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = torch.as_tensor(sample).to(device)
    sil = silhouette(x[index], labels[index], acc_dtype, chunk)
    timings["silhouette_s"] = time.perf_counter() - t0
    if settings.normalize != "l2":
        l2.apply_(x)  # L_align is defined on unit rows whatever the other metrics use
    t0 = time.perf_counter()
    table, from_cache = neighbour_table(cfg, view, split, settings.k)
    timings["knn_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    align, pairs = l_align(x, labels, table[:, : settings.k], chunk)
    timings["l_align_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start

    values = {"l_align": align, "davies_bouldin": dbs, "silhouette": sil}
    notes = [
        f"{name}: undefined (needs 2 to N-1 classes among the rows measured)"
        for name, v in values.items()
        if math.isnan(v)
    ]
    metrics = {name: _finite(v) for name, v in values.items()}
    metrics["num_classes"] = int(np.unique(labels_np).size)
    info = {
        "split": split,
        "num_rows": len(labels_np),
        "distance": settings.distance,
        "l_align_distance": "squared euclidean on L2-normalised features",
        "k": settings.k,
        "l_align_pairs": pairs,
        "true_positive_fraction": pairs / max(1, table.shape[0] * settings.k),
        "knn_from_cache": bool(from_cache),
        "silhouette_sample": int(sample.size),
        "silhouette_sample_requested": settings.silhouette_sample,
        "dtype": settings.dtype,
        "device": str(device),
        "notes": notes,
    }
    payload = RunResult(
        method=SEPARABILITY,
        dataset=view.name,
        seed=seed,
        metrics=metrics,
        method_info=info,
        dataset_summary=view.summary(),
        timings=timings,
        config=cfg,
    ).write(run_dir)
    out = Table(title=f"separability of {view.name} ({split}, seed {seed})")
    out.add_column("metric")
    out.add_column("value", justify="right")
    for name in METRICS:
        out.add_row(name, "undefined" if metrics[name] is None else f"{metrics[name]:.4f}")
    console.print(out)
    console.print(
        f"L_align over {pairs:,} same-label pairs among {settings.k}-NN; silhouette on "
        f"{sample.size:,} sampled rows; {settings.distance}"
    )
    console.print(f"results: {run_dir / 'results.json'}")
    return payload
