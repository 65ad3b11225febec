"""Everything a lent GPU should measure, in one go: `make bench-gpu` (at most ~8 minutes).

    python -m clusterbench.perf.gpu [--out gpu_bench.json] [--table gpu_bench.md] [--dry-run]

Sections, each with its target (from the speed issue of the project's tracker, and the paper's
40 GB limit for SCANv2 at ImageNet-21K's cluster count):

step        fused vs per-head loop, features on the device, fp32 and bf16 (fused >= 5x loop)
memory      SCANv2 at C = 10450, B = 4096, H = 32, D = 1024: peak memory of a step (<= 40 GB)
in21k       an ImageNet-21K epoch (N = 11M, D = 1024, C = 10450, H = 32) projected from the step
            time at each method's batch size (TEMI 512, SCANv2 4096; <= 2 min)
faiss       exact kNN (k = 50) and spherical k-means (C = 1000) at 1M x 1024 on the GPU,
            through the project's own code paths (`clusterbench.perf.scale`)
extract     images/s of one timm model through the extraction pipeline and bare

It writes one JSON report and the Markdown table docs/measurements/ carry. Without CUDA it stops
with one line; `--dry-run` runs every section at tiny sizes on the CPU (the test suite does).
A section that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from clusterbench.methods.self_distillation.module import LOSSES
from clusterbench.perf.model import FULL, Shape, step_flops
from clusterbench.perf.step import Data, gemm_rate, make_step, time_steps

GB = 1e9
IN21K_ROWS = 11_000_000  # ImageNet-21K-P train images, rounded (paper Table 5: 11.06M)
PAPER_MEMORY_LIMIT_GB = 40.0
BATCH_SIZE = {"temi": 512, "scanv2": 4096}  # the paper's (appendix C.1)
# --dry-run: every code path at sizes that take seconds on a CPU; no number from it means anything.
TINY = Shape(n=512, d=16, c=10, h=2, b=16, hidden=16, bottleneck=8, knn=5)
TARGETS = {"fused_over_loop": 5.0, "memory_gb": PAPER_MEMORY_LIMIT_GB, "in21k_epoch_s": 120.0}


def in21k_shape(b: int, dry_run: bool) -> Shape:
    if dry_run:
        return TINY
    return Shape(n=65_536, d=1024, c=10450, h=32, b=b)


def best_seconds(step: Callable, device: torch.device, rounds: int, steps: int) -> float:
    step()  # warm-up: allocations, cuBLAS heuristics
    return min(time_steps(step, device, steps) for _ in range(rounds))


def section_step(device: torch.device, dry_run: bool) -> dict:
    """Fused vs loop and bf16 vs fp32 at the `make bench` shape, features on the device."""
    shape = TINY if dry_run else FULL
    rounds, steps = (1, 1) if dry_run else (3, 5)
    out: dict = {"shape": asdict(shape), "flops_per_step": step_flops(shape)["total"]}
    data = Data(shape, device)
    for loss in LOSSES:
        row = {}
        for impl, bf16 in (("fused", False), ("loop", False), ("fused", True), ("loop", True)):
            s = replace(shape, bf16=bf16)
            step = make_step(impl, s, loss, device, data)
            seconds = best_seconds(step, device, rounds, steps)
            row[f"{impl}_{'bf16' if bf16 else 'fp32'}"] = {
                "seconds_per_step": seconds,
                "pairs_per_second": shape.b / seconds,
            }
            del step
            gc.collect()
        for precision in ("fp32", "bf16"):
            row[f"fused_over_loop_{precision}"] = (
                row[f"loop_{precision}"]["seconds_per_step"]
                / row[f"fused_{precision}"]["seconds_per_step"]
            )
        row["bf16_over_fp32_fused"] = (
            row["fused_fp32"]["seconds_per_step"] / row["fused_bf16"]["seconds_per_step"]
        )
        out[loss] = row
    out["gemm_fp32_flops_per_second"] = (
        gemm_rate(device, 256, repeats=1) if dry_run else gemm_rate(device, 8192)
    )
    return out


def section_memory(device: torch.device, dry_run: bool) -> dict:
    """Peak memory of a SCANv2 step at the paper's largest setting, fp32 and bf16 autocast."""
    from clusterbench.perf.memory_probe import measure_memory

    out = {}
    for bf16 in (False, True):
        shape = replace(in21k_shape(4096, dry_run), bf16=bf16)
        mem = measure_memory("fused", shape, "scanv2", device)
        # Off CUDA the process RSS barely moves at dry-run sizes; the traced
        # allocations of the step are the deterministic measure there.
        step_bytes = max(mem["step"], mem.get("allocated", {}).get("step", 0))
        out["bf16" if bf16 else "fp32"] = {
            "shape": asdict(shape),
            "peak_bytes": mem["resident"] + step_bytes,
            "step_bytes": step_bytes,
            # Features of all 11M rows in float16 on top, if kept on the device.
            "in21k_features_float16_bytes": IN21K_ROWS * shape.d * 2,
        }
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def section_in21k(device: torch.device, dry_run: bool) -> dict:
    """Seconds per ImageNet-21K epoch, from the fused bf16 step at each method's batch size."""
    rounds, steps = (1, 1) if dry_run else (2, 5)
    rows = 1_000 if dry_run else IN21K_ROWS
    out = {}
    for loss in LOSSES:
        shape = replace(in21k_shape(BATCH_SIZE[loss], dry_run), bf16=True)
        data = Data(shape, device)
        step = make_step("fused", shape, loss, device, data)
        seconds = best_seconds(step, device, rounds, steps)
        steps_per_epoch = math.ceil(rows / shape.b)
        out[loss] = {
            "shape": asdict(shape),
            "seconds_per_step": seconds,
            "pairs_per_second": shape.b / seconds,
            "steps_per_epoch": steps_per_epoch,
            "epoch_seconds": steps_per_epoch * seconds,
        }
        del step, data
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def section_faiss(device: torch.device, dry_run: bool) -> dict:
    """Exact kNN of every row and spherical k-means at 1M x 1024 with faiss on the GPU, through
    `NeighbourIndex` and `SphericalKMeans` on the scale benchmark's generated mixture."""
    import faiss

    from clusterbench.evaluation.metrics import evaluate
    from clusterbench.methods.kmeans import SphericalKMeans
    from clusterbench.methods.task import ClusteringTask
    from clusterbench.neighbours import NeighbourIndex
    from clusterbench.perf.scale_data import QUICK as QUICK_MIXTURE
    from clusterbench.perf.scale_data import MixtureSpec, make_view, mixture_on_sphere

    faiss_device = "cuda" if device.type == "cuda" else "cpu"
    if faiss_device == "cuda" and not getattr(faiss, "get_num_gpus", lambda: 0)():
        raise RuntimeError(
            "this faiss build has no GPU support: pip install -e '.[gpu]' && pip uninstall faiss-cpu"
        )
    spec = QUICK_MIXTURE if dry_run else MixtureSpec(rows=1_000_000, dim=1024, clusters=1000)
    start = time.perf_counter()
    features, labels = mixture_on_sphere(spec)
    out: dict = {"rows": spec.rows, "dim": spec.dim, "generate_s": time.perf_counter() - start}
    view = make_view(features, labels)
    neighbours = NeighbourIndex(view.train, "gpu-bench", None, k=50, device=faiss_device)
    start = time.perf_counter()
    table = neighbours.table(50)
    out["knn_flat_k50_s"] = time.perf_counter() - start
    out["knn_same_class_fraction"] = float((labels[table] == labels[:, None]).mean())
    del table, neighbours
    task = ClusteringTask(view, spec.clusters, 0, faiss_device, Path("."))
    start = time.perf_counter()
    kmeans = SphericalKMeans(num_clusters=spec.clusters)
    predictions = kmeans.fit_predict(task)
    out["kmeans_c1000_s"] = time.perf_counter() - start
    out["kmeans_train_points"] = task.info["kmeans_train_points"]
    metrics = evaluate(predictions, view.val_labels, view.num_classes)["metrics"]
    out["kmeans_acc"], out["kmeans_nmi"] = metrics["acc"], metrics["nmi"]
    out["kmeans_on_gpu"] = float(kmeans.gpu)
    return out


def section_extract(device: torch.device, dry_run: bool) -> dict:
    """Pipeline and bare images/s of one timm model (random weights)."""
    from clusterbench.perf import extract

    if dry_run:
        return extract.run(arch="resnet18", images=4, batch_size=2, workers="0", rounds=1)
    return extract.run(
        arch="vit_base_patch16_224", images=1024, batch_size=256, device="cuda", rounds=1
    )


SECTIONS: dict[str, Callable[[torch.device, bool], dict]] = {
    "step": section_step,
    "memory": section_memory,
    "in21k": section_in21k,
    "faiss": section_faiss,
    "extract": section_extract,
}


def run(device: torch.device, dry_run: bool, only: list[str] | None = None) -> dict:
    from clusterbench.perf.__main__ import machine_info

    report: dict = {"machine": machine_info(device), "dry_run": dry_run, "targets": TARGETS}
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            report[name] = section(device, dry_run)
        except Exception as exc:  # noqa: BLE001  (record it; the other sections still run)
            report[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        report[name]["seconds"] = time.perf_counter() - start
        print(
            f"{name}: {report[name]['seconds']:.0f} s"
            + (" (failed)" if "error" in report[name] else "")
        )
    return report


def _met(value: float, target: float, smaller_is_better: bool = False) -> str:
    ok = value <= target if smaller_is_better else value >= target
    return "yes" if ok else "**no**"


def markdown(report: dict) -> str:
    """The measurement table: one row per measurement, with its target."""
    m = report["machine"]
    lines = [
        f"Device: {m.get('gpu', m['device'])}; torch {m['torch']}"
        + (" (dry run: tiny sizes on the CPU, not a measurement)" if report["dry_run"] else ""),
        "",
        "| measurement | value | target | met |",
        "|---|---:|---:|---|",
    ]
    add = lines.append
    for name in SECTIONS:
        if name in report and "error" in report[name]:
            add(f"| {name} | failed: {report[name]['error'].splitlines()[0][:80]} | | |")
    step = report.get("step")
    if step and "error" not in step:
        for loss in LOSSES:
            r = step[loss]
            for precision in ("fp32", "bf16"):
                speedup = r[f"fused_over_loop_{precision}"]
                add(
                    f"| {loss} fused {precision}, pairs/s (loop) | "
                    f"{r[f'fused_{precision}']['pairs_per_second']:,.0f} "
                    f"({r[f'loop_{precision}']['pairs_per_second']:,.0f}) | | |"
                )
                add(
                    f"| {loss} fused / loop, {precision} | {speedup:.2f}x | >= 5x | "
                    f"{_met(speedup, TARGETS['fused_over_loop'])} |"
                )
            add(f"| {loss} bf16 / fp32, fused | {r['bf16_over_fp32_fused']:.2f}x | | |")
    memory = report.get("memory")
    if memory and "error" not in memory:
        for precision in ("fp32", "bf16"):
            gb = memory[precision]["peak_bytes"] / GB
            add(
                f"| SCANv2 C=10450 B=4096 H=32 peak, {precision} | {gb:.1f} GB | <= 40 GB | "
                f"{_met(gb, TARGETS['memory_gb'], True)} |"
            )
    in21k = report.get("in21k")
    if in21k and "error" not in in21k:
        for loss in LOSSES:
            r = in21k[loss]
            add(
                f"| ImageNet-21K epoch, {loss} B={r['shape']['b']} bf16 | "
                f"{r['epoch_seconds']:.0f} s ({r['pairs_per_second']:,.0f} pairs/s) | <= 120 s | "
                f"{_met(r['epoch_seconds'], TARGETS['in21k_epoch_s'], True)} |"
            )
    faiss_r = report.get("faiss")
    if faiss_r and "error" not in faiss_r:
        size = f"{faiss_r['rows']:,} x {faiss_r['dim']}"
        add(f"| faiss exact 50-NN of every row, {size} | {faiss_r['knn_flat_k50_s']:.1f} s | | |")
        add(
            f"| spherical k-means C=1000 ({faiss_r['kmeans_train_points']:,} training points), "
            f"{'GPU' if faiss_r['kmeans_on_gpu'] else 'CPU'} | {faiss_r['kmeans_c1000_s']:.1f} s "
            f"(ACC {100 * faiss_r['kmeans_acc']:.1f} %) | | |"
        )
    ext = report.get("extract")
    if ext and "error" not in ext:
        add(
            f"| extraction {ext['arch']}, images/s pipeline (bare) | {ext['best_pipeline']:,.0f} "
            f"({ext['best_bare']:,.0f}) | | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench.perf.gpu",
        description="All GPU measurements in one run: JSON report and Markdown table.",
    )
    parser.add_argument("--out", default="gpu_bench.json", help="JSON report path")
    parser.add_argument("--table", default="gpu_bench.md", help="Markdown table path")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if only and set(only) - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(set(only) - set(SECTIONS))}")
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: torch sees no CUDA device; this benchmark measures a GPU "
            "(--dry-run runs it at tiny sizes on the CPU)",
            file=sys.stderr,
        )
        return 2
    from clusterbench.core.cli import quiet_libraries

    quiet_libraries()
    device = torch.device("cpu" if args.dry_run else "cuda")
    report = run(device, args.dry_run, only)
    table = markdown(report)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    Path(args.table).write_text(table)
    print(table)
    print(f"wrote {args.out} and {args.table}")
    failed = [name for name in SECTIONS if "error" in report.get(name, {})]
    if failed:
        print(f"error: sections failed: {', '.join(failed)} (see {args.out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
