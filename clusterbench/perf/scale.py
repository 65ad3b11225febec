"""A million rows on a CPU: IVF kNN recall and time against exact search, then kNN + k-means.

    python -m clusterbench perf scale [--rows 1000000] [--dim 384] [--clusters 1000]
                                      [--queries 10000] [--nlist 1024,2048,4096]
                                      [--nprobe 4,8,16,32,64] [--e2e defaults|auto|off]
                                      [--out outputs/scale_results.json] [--quick]

data      a mixture of `clusters` classes on the unit sphere (`scale_data.mixture_on_sphere`:
          superclasses of overlapping classes, each a low-rank Gaussian plus noise).
truth     exact 50-NN (self excluded) of `queries` sampled rows (`scale_data.exact_neighbours`).
sweep     per nlist, `clusterbench.neighbours.build_index` (the code `knn=ivf` runs: training
          on its 256k-row sample, then adding every row), its train and add times, then per
          nprobe the search time of the sampled queries and their recall@k against the truth.
end to end  what `python -m clusterbench method=... knn=ivf` pays at that size: the kNN table
          of all rows through `NeighbourIndex.table(k)` at `conf/knn/ivf.yaml`'s defaults (or
          --e2e-nlist / --e2e-nprobe), then `SphericalKMeans.fit_predict` (conf/method/kmeans.yaml
          defaults) with ACC / NMI / ARI on the generated labels, predicted on every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import faiss
import numpy as np
import torch
from omegaconf import OmegaConf

from clusterbench.core.config import CONFIG_DIR
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.rows import FeatureRows
from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.metrics import evaluate
from clusterbench.methods.kmeans import SphericalKMeans
from clusterbench.methods.task import ClusteringTask
from clusterbench.neighbours import NeighbourIndex, build_index, drop_self, ivf_nlist
from clusterbench.perf.__main__ import machine_info
from clusterbench.perf.scale_data import (
    QUICK,
    MixtureSpec,
    exact_neighbours,
    make_view,
    mixture_on_sphere,
)

CONF = Path(CONFIG_DIR)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true k neighbours that `found` contains."""
    k = truth.shape[1]
    hits = sum(np.intersect1d(f, t).size for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


def choose(rows: list[dict], target: float) -> dict:
    """The swept (nlist, nprobe) reaching `target` recall with the least time for a whole
    kNN table (train + add + search of every row); the best recall when none reaches it."""
    meeting = [r for r in rows if r["recall"] >= target]
    if not meeting:
        return max(rows, key=lambda r: r["recall"])
    return min(
        meeting, key=lambda r: r["train_seconds"] + r["add_seconds"] + r["search_seconds_all_rows"]
    )


def ivf_defaults() -> dict:
    """nlist and nprobe of conf/knn/ivf.yaml: what `knn=ivf` uses."""
    conf = OmegaConf.load(CONF / "knn" / "ivf.yaml")
    return {"nlist": conf.nlist, "nprobe": int(conf.nprobe), "k": int(conf.k)}


def kmeans_defaults() -> dict:
    """The keys of conf/method/kmeans.yaml that SphericalKMeans takes."""
    conf = OmegaConf.to_container(OmegaConf.load(CONF / "method" / "kmeans.yaml"))
    return {key: value for key, value in conf.items() if not key.startswith("_")}


def sweep(
    rows: FeatureRows,
    queries: np.ndarray,
    truth: np.ndarray,
    nlists: list[int],
    nprobes: list[int],
    seed: int,
    chunk_size: int = 65536,
) -> list[dict]:
    """Build each IVF as `knn=ivf` does, then search the sampled queries at every nprobe."""
    k = truth.shape[1]
    xq = l2_normalize_rows(rows.take(queries))
    out = []
    for nlist in nlists:
        timings: dict = {}
        index = build_index(rows, f"IVF{nlist},Flat", 1, "cpu", chunk_size, seed, timings)
        for nprobe in nprobes:
            if nprobe > nlist:
                continue
            index.nprobe = nprobe
            start, cpu = time.perf_counter(), time.process_time()
            _, found = index.search(xq, k + 1)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            row = {
                "nlist": nlist,
                "nprobe": nprobe,
                **timings,
                "search_seconds": seconds,
                "search_seconds_all_rows": seconds * len(rows) / len(queries),
                "search_cpu_seconds": cpu,
                "recall": recall(drop_self(found, queries), truth),
                "load_average": os.getloadavg()[0],
            }
            print(
                f"nlist {nlist:6d} nprobe {nprobe:4d}: recall@{k} {row['recall']:.4f}, "
                f"search {seconds:.2f} s ({row['search_seconds_all_rows']:.0f} s for all rows)",
                flush=True,
            )
            out.append(row)
        del index
    return out


def end_to_end(
    view: BenchmarkView,
    queries: np.ndarray,
    truth: np.ndarray,
    nlist: int,
    nprobe: int,
    clusters: int,
    kmeans: dict,
    seed: int,
) -> dict:
    """kNN table of every row through NeighbourIndex, then spherical k-means, timed apart."""
    k = truth.shape[1]
    index = f"IVF{nlist},Flat"
    neighbours = NeighbourIndex(
        view.train, "scale", None, k=k, index=index, nprobe=nprobe, device="cpu", seed=seed
    )
    start, cpu = time.perf_counter(), time.process_time()
    table = neighbours.table(k)
    knn_seconds, knn_cpu = time.perf_counter() - start, time.process_time() - cpu
    knn_recall = recall(table[queries], truth)
    del table, neighbours
    clustering = kmeans_run(view, clusters, kmeans, seed)
    return {
        "index": index,
        "nprobe": nprobe,
        "k": k,
        "knn_seconds": knn_seconds,
        "knn_cpu_seconds": knn_cpu,
        "knn_recall": knn_recall,
        **clustering,
        "total_seconds": knn_seconds + clustering["kmeans_seconds"],
        "total_cpu_seconds": knn_cpu + clustering["kmeans_cpu_seconds"],
    }


def kmeans_run(view: BenchmarkView, clusters: int, kmeans: dict, seed: int) -> dict:
    """`SphericalKMeans.fit_predict` on the view (predicting every row), timed and scored."""
    task = ClusteringTask(view, clusters, seed, "cpu", Path("."))
    start, cpu = time.perf_counter(), time.process_time()
    predictions = SphericalKMeans(**{**kmeans, "num_clusters": clusters}).fit_predict(task)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    metrics = evaluate(predictions, view.val_labels, view.num_classes)["metrics"]
    return {
        "kmeans": {key: value for key, value in kmeans.items() if key != "name"},
        "kmeans_seconds": seconds,
        "kmeans_cpu_seconds": cpu,
        "kmeans_info": task.info,
        "acc": metrics["acc"],
        "nmi": metrics["nmi"],
        "ari": metrics["ari"],
        "empty_clusters": metrics["empty_clusters"],
        "load_average": os.getloadavg()[0],
    }


def run(
    spec: MixtureSpec,
    num_queries: int,
    nlists: list[int],
    nprobes: list[int],
    e2e: dict | None,
    kmeans: dict,
    k: int,
    target: float = 0.95,
    kmeans_points: list[int] | None = None,
) -> dict:
    """Every measurement of the scale benchmark; returns the JSON-ready report."""
    report: dict = {
        "machine": {**machine_info(torch.device("cpu")), "faiss": faiss.__version__},
        "faiss_threads": faiss.omp_get_max_threads(),
        "data": asdict(spec),
        "k": k,
    }
    start = time.perf_counter()
    features, labels = mixture_on_sphere(spec)
    report["generate_seconds"] = time.perf_counter() - start
    rng = np.random.default_rng(spec.seed + 1)
    queries = np.sort(rng.choice(spec.rows, min(num_queries, spec.rows), replace=False))
    start = time.perf_counter()
    truth = exact_neighbours(features, queries, k)
    report["exact"] = {
        "queries": int(queries.size),
        "seconds": time.perf_counter() - start,
        "same_class_fraction": float((labels[truth] == labels[queries, None]).mean()),
        "load_average": os.getloadavg()[0],
    }
    print(
        f"exact {k}-NN of {queries.size:,} queries: {report['exact']['seconds']:.1f} s, "
        f"{100 * report['exact']['same_class_fraction']:.1f} % in the query's class",
        flush=True,
    )
    view = make_view(features, labels)
    report["sweep"] = (
        sweep(view.train, queries, truth, nlists, nprobes, spec.seed) if nlists else []
    )
    if e2e is not None and e2e.get("nlist") is None:
        best = choose(report["sweep"], target)
        e2e = {"nlist": best["nlist"], "nprobe": best["nprobe"], "chosen_for_recall": target}
        report["chosen"] = e2e
    if e2e is not None:
        report["end_to_end"] = end_to_end(
            view, queries, truth, e2e["nlist"], e2e["nprobe"], spec.clusters, kmeans, spec.seed
        )
    report["kmeans_points"] = []
    for points in kmeans_points or []:
        row = kmeans_run(
            view, spec.clusters, {**kmeans, "max_points_per_centroid": points}, spec.seed
        )
        print(
            f"k-means, {points} points per centroid: ACC {100 * row['acc']:.2f} NMI "
            f"{100 * row['nmi']:.2f} in {row['kmeans_seconds']:.0f} s",
            flush=True,
        )
        report["kmeans_points"].append(row)
    return report


def print_report(report: dict) -> None:
    """The report as rich tables: the sweep, then the end-to-end run."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    m, data, exact = report["machine"], report["data"], report["exact"]
    console.print(
        f"{m['cpu']}, {m['cores']} cores, faiss {m['faiss']} ({report['faiss_threads']} threads), "
        f"load {m['load_average'][0]:.2f} at start\n"
        f"{data['rows']:,} x {data['dim']} rows, {data['clusters']} classes; "
        f"generated in {report['generate_seconds']:.1f} s; exact {report['k']}-NN of "
        f"{exact['queries']:,} queries {exact['seconds']:.1f} s "
        f"({100 * exact['same_class_fraction']:.1f} % same class)"
    )
    table = Table(title=f"IVF{{nlist}},Flat: recall@{report['k']} vs exact")
    columns = ("nlist", "nprobe", "train s (CPU)", "add s (CPU)", "search s (CPU)")
    columns += ("all rows s", "recall")
    for name in (*columns, "load"):
        table.add_column(name, justify="right")
    for r in report["sweep"]:
        table.add_row(
            str(r["nlist"]),
            str(r["nprobe"]),
            f"{r['train_seconds']:.0f} ({r['train_cpu_seconds']:.0f})",
            f"{r['add_seconds']:.0f} ({r['add_cpu_seconds']:.0f})",
            f"{r['search_seconds']:.2f} ({r['search_cpu_seconds']:.2f})",
            f"{r['search_seconds_all_rows']:.0f}",
            f"{r['recall']:.4f}",
            f"{r['load_average']:.2f}",
        )
    console.print(table)
    e2e = report.get("end_to_end")
    if e2e:
        table = Table(title="end to end: kNN of every row + spherical k-means")
        for name in ("index", "nprobe", "kNN s (CPU)", "recall", "k-means s (CPU)", "total s"):
            table.add_column(name, justify="right")
        for name in ("points/centroid", "ACC", "NMI", "load"):
            table.add_column(name, justify="right")
        table.add_row(
            e2e["index"],
            str(e2e["nprobe"]),
            f"{e2e['knn_seconds']:.0f} ({e2e['knn_cpu_seconds']:.0f})",
            f"{e2e['knn_recall']:.4f}",
            f"{e2e['kmeans_seconds']:.0f} ({e2e['kmeans_cpu_seconds']:.0f})",
            f"{e2e['total_seconds']:.0f}",
            str(e2e["kmeans"].get("max_points_per_centroid")),
            f"{100 * e2e['acc']:.2f}",
            f"{100 * e2e['nmi']:.2f}",
            f"{e2e['load_average']:.2f}",
        )
        console.print(table)
    if report.get("kmeans_points"):
        table = Table(title="spherical k-means vs max_points_per_centroid")
        for name in ("points/centroid", "train points", "k-means s", "ACC", "NMI", "load"):
            table.add_column(name, justify="right")
        for r in report["kmeans_points"]:
            table.add_row(
                str(r["kmeans"]["max_points_per_centroid"]),
                f"{r['kmeans_info']['kmeans_train_points']:,}",
                f"{r['kmeans_seconds']:.0f}",
                f"{100 * r['acc']:.2f}",
                f"{100 * r['nmi']:.2f}",
                f"{r['load_average']:.2f}",
            )
        console.print(table)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench perf scale",
        description="IVF recall and time against exact search, then kNN + k-means, at 1M rows.",
    )
    parser.add_argument("--rows", type=int, help="rows (1,000,000)")
    parser.add_argument("--dim", type=int, help="dimension (384)")
    parser.add_argument("--clusters", type=int, help="classes and k-means clusters (1000)")
    parser.add_argument("--queries", type=int, help="sampled queries with exact truth (10,000)")
    parser.add_argument("--nlist", type=_ints, help="nlist values to sweep (1024,2048,4096)")
    parser.add_argument("--nprobe", type=_ints, help="nprobe values to sweep (4,8,16,32,64)")
    parser.add_argument(
        "--e2e",
        choices=["defaults", "auto", "off"],
        default="defaults",
        help="end-to-end run at conf/knn/ivf.yaml's nlist/nprobe (defaults), at the swept "
        "pair reaching --target recall fastest (auto), or none (off)",
    )
    parser.add_argument("--e2e-nlist", type=int, help="nlist of the end-to-end run (ivf.yaml)")
    parser.add_argument("--e2e-nprobe", type=int, help="nprobe of the end-to-end run (ivf.yaml)")
    parser.add_argument("--target", type=float, default=0.95, help="recall target (0.95)")
    parser.add_argument(
        "--max-points-per-centroid", type=int, help="k-means sample cap (kmeans.yaml)"
    )
    parser.add_argument(
        "--kmeans-points",
        type=_ints,
        help="also run k-means alone at each of these max_points_per_centroid values",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the nlist/nprobe sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument(
        "--out", default="outputs/scale_results.json", help="JSON report path (outputs/...)"
    )
    args = parser.parse_args(argv)
    spec = QUICK if args.quick else MixtureSpec()
    spec = replace(
        spec,
        rows=args.rows or spec.rows,
        dim=args.dim or spec.dim,
        clusters=args.clusters or spec.clusters,
        superclasses=max(1, (args.clusters or spec.clusters) * spec.superclasses // spec.clusters),
        seed=args.seed,
    )
    defaults = ivf_defaults()
    if args.quick and args.e2e == "defaults":
        args.e2e_nlist, args.e2e_nprobe = args.e2e_nlist or 64, args.e2e_nprobe or 4
    nlists = args.nlist or ([16, 64] if args.quick else [1024, 2048, 4096])
    if args.no_sweep and args.e2e == "auto":
        parser.error("--e2e auto chooses from the sweep; it cannot go with --no-sweep")
    nlists = [] if args.no_sweep else nlists
    nprobes = args.nprobe or ([1, 4, 16] if args.quick else [4, 8, 16, 32, 64])
    kmeans = kmeans_defaults()
    if args.quick:
        kmeans["niter"] = 10
    if args.max_points_per_centroid:
        kmeans["max_points_per_centroid"] = args.max_points_per_centroid
    e2e = None
    if args.e2e == "auto":
        e2e = {"nlist": None}
    elif args.e2e == "defaults":
        nlist = defaults["nlist"]
        e2e = {"nlist": args.e2e_nlist or (ivf_nlist(spec.rows) if nlist == "auto" else nlist)}
        e2e["nprobe"] = args.e2e_nprobe or defaults["nprobe"]
    queries = args.queries or (500 if args.quick else 10000)
    report = run(
        spec, queries, nlists, nprobes, e2e, kmeans, defaults["k"], args.target, args.kmeans_points
    )
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
