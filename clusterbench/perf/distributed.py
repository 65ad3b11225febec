"""k-means and neighbour mining on 1 and 2 processes: the scaling efficiency on this machine,
and the cost model of the distributed paths at 1B rows.

    python -m clusterbench perf distributed [--rows 200000] [--dim 128] [--clusters 1000]
                                            [--knn-rows 20000] [--niter 10] [--quick]
                                            [--out outputs/distributed_results.json]

Both paths run as the CLI runs them (`lloyd` of methods/kmeans_distributed.py and
`mine_distributed` of neighbours_distributed.py) on the same memory-mapped rows, with 2 gloo
processes of one thread each against 1 process of one thread and 1 process of two threads:
scaling efficiency = t(1 process, 1 thread) / (2 x t(2 processes)).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clusterbench.data.rows import FeatureRows
from clusterbench.methods.kmeans_distributed import lloyd
from clusterbench.neighbours_distributed import mine_distributed
from clusterbench.perf.scale_data import MixtureSpec, mixture_on_sphere


def _timed(kind: str, rows: np.ndarray, args: dict, rank: int, world: int, tmp: str) -> float:
    view = FeatureRows(np.load(rows, mmap_mode="r"))
    barrier = dist.barrier if world > 1 else (lambda: None)
    barrier()
    start = time.perf_counter()
    if kind == "kmeans":
        lloyd(view, args["clusters"], args["niter"], seed=0, rank=rank, world=world,
              max_points_per_centroid=10**9, chunk_size=16384)  # fmt: skip
    else:
        cache = Path(tmp) / f"cache-{world}-{args['tag']}"
        mine_distributed(view, "bench", 50, cache, rank, world, barrier, chunk_size=4096)
    barrier()
    return time.perf_counter() - start


def _worker(rank: int, world: int, init: str, jobs: list, out: str):
    """Every (kind, rows, args) of `jobs` timed on this rank; rank 0 writes the seconds."""
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    seconds = [_timed(kind, rows, args, rank, world, os.path.dirname(out))
               for kind, rows, args in jobs]  # fmt: skip
    if rank == 0:
        Path(out).write_text(json.dumps(seconds))
    dist.destroy_process_group()


def measure(jobs: list[tuple[str, str, dict]], tmp: str) -> list[dict]:
    """Per (kind, rows, args): seconds with 1 process x 1 thread, 1 process x 2 threads, and
    2 processes x 1 thread (one pair of processes times every job: one start-up)."""
    reports = []
    for kind, rows, args in jobs:
        out: dict = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out[f"1x{threads}_s"] = _timed(kind, rows, {**args, "tag": f"t{threads}"}, 0, 1, tmp)
        reports.append(out)
    result, init = Path(tmp) / "two_processes.json", Path(tmp) / "two_processes.init"
    tagged = [(kind, rows, {**args, "tag": "p2"}) for kind, rows, args in jobs]
    mp.spawn(_worker, args=(2, str(init), tagged, str(result)), nprocs=2, join=True)
    for out, seconds in zip(reports, json.loads(result.read_text()), strict=True):
        out["2x1_s"] = seconds
        out["efficiency"] = out["1x1_s"] / (2 * out["2x1_s"])
        out["speedup_vs_1x2"] = out["1x2_s"] / out["2x1_s"]
    return [{k: round(v, 4) for k, v in out.items()} for out in reports]


def cost_model(rows: float = 1e9, dim: int = 768, clusters: int = 100_000, gpus: int = 64,
               tflops: float = 400.0, link_gbs: float = 25.0) -> dict:  # fmt: skip
    """Per-iteration cost of distributed k-means at `rows` x `dim`, `clusters` centroids on
    `gpus` ranks: the assignment product (2 FLOPs per multiply-add, at `tflops` of bf16 GEMM
    per GPU), the all-reduce of fp64 sums and counts (a ring moves 2 (p-1)/p of the buffer per
    rank, at `link_gbs` GB/s), and memory per rank (its shard in bf16, the centroids, sums)."""
    shard = rows / gpus
    flops = 2.0 * shard * clusters * dim
    buffer = (clusters * dim + clusters + 1) * 8  # float64 sums, counts, objective
    moved = 2 * (gpus - 1) / gpus * buffer
    return {
        "rows_per_rank": shard,
        "shard_gb_bf16": shard * dim * 2 / 1e9,
        "centroids_gb_fp32": clusters * dim * 4 / 1e9,
        "sums_gb_fp64": buffer / 1e9,
        "flops_per_rank_per_iteration": flops,
        "compute_s_per_iteration": flops / (tflops * 1e12),
        "allreduce_gb_per_rank_per_iteration": moved / 1e9,
        "allreduce_s_per_iteration": moved / (link_gbs * 1e9),
        "assumed": {"tflops_bf16_per_gpu": tflops, "link_gb_per_s": link_gbs},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterbench perf distributed")
    parser.add_argument("--rows", type=int, default=200_000, help="k-means rows (200,000)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--knn-rows", type=int, default=20_000, help="kNN rows (20,000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", default="outputs/distributed_results.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.clusters, args.knn_rows, args.niter = 4000, 20, 2000, 3
    spec = MixtureSpec(rows=args.rows, dim=args.dim, clusters=args.clusters,
                       superclasses=max(1, args.clusters // 10))  # fmt: skip
    report: dict = {"rows": args.rows, "dim": args.dim, "clusters": args.clusters,
                    "niter": args.niter, "knn_rows": args.knn_rows, "cpus": os.cpu_count()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        x, _ = mixture_on_sphere(spec)
        np.save(Path(tmp) / "rows.npy", x)
        np.save(Path(tmp) / "knn_rows.npy", x[: args.knn_rows])
        del x
        common = {"clusters": args.clusters, "niter": args.niter}
        report["kmeans"], report["knn_exact"] = measure(
            [("kmeans", str(Path(tmp) / "rows.npy"), common),
             ("knn", str(Path(tmp) / "knn_rows.npy"), common)], tmp)  # fmt: skip
    report["cost_model_1b"] = cost_model()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for kind in ("kmeans", "knn_exact"):
        r = report[kind]
        print(f"{kind}: 1 process x 1 thread {r['1x1_s']:.2f} s, 1 x 2 threads {r['1x2_s']:.2f} s, "
              f"2 processes x 1 thread {r['2x1_s']:.2f} s: efficiency {r['efficiency']:.2f}")  # fmt: skip
    m = report["cost_model_1b"]
    print(
        f"1B x 768, 100K clusters, 64 GPUs: {m['rows_per_rank'] / 1e6:.1f}M rows and "
        f"{m['shard_gb_bf16']:.1f} GB per rank, {m['compute_s_per_iteration']:.2f} s of products "
        f"and {m['allreduce_gb_per_rank_per_iteration']:.2f} GB all-reduced "
        f"({m['allreduce_s_per_iteration']:.3f} s) per iteration"
    )
    print(f"report: {args.out}")
    return 0
