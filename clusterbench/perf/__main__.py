"""Training-step throughput and memory of the TEMI / SCANv2 heads: fused vs a per-head loop.

    python -m clusterbench perf [--quick] [--device cpu|cuda] [--out PATH]
    python -m clusterbench perf extract [...]   feature extraction (clusterbench.perf.extract)
    python -m clusterbench perf probing [...]   the stacked probe grid (clusterbench.perf.probing)
    python -m clusterbench perf scale [...]     IVF kNN + k-means at 1M rows (clusterbench.perf.scale)

A step is one full training step as in `SelfDistillationClustering`: gather B anchor and B
neighbour rows from an (N, D) feature matrix held on the device, student and teacher forward on
the 2B rows, loss, backward, AdamW step and EMA teacher update. It is timed without Lightning by
calling the module's own pieces (`head_losses`, its optimiser, `teacher.update`), and once
through a real `lightning.Trainer` to show the framework's overhead.

Two implementations of the same step are compared:
    fused  `SelfDistillationClustering` (stacked heads, blocked last layer + loss)
    loop   the straightforward code: one `nn.Sequential` per head (weight-normed last layer
           from torch.nn.utils.parametrizations), the heads run one after the other with
           autograd through `temi_loss` / `scan_loss`, the same AdamW and EMA
Both start from the same weights and compute the same losses and gradients (tests check it).

Throughput is reported as pairs/s and as a fraction of the GEMM rate of the step's own dtype,
measured by this script with `torch.mm` in the same run: fp32 steps against the fp32 rate, bf16
(`--bf16`) steps against the bf16 rate (`gemm_dtype` of each row names it). The step's
matrix-product FLOPs are counted layer by layer (`step_flops`).
Memory is the peak of a step, measured in a fresh process per configuration (peak RSS on a
CPU, `torch.cuda.max_memory_allocated` on a GPU), and compared with `memory_model`, an exact
count of the bytes the fused step holds at its peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from clusterbench.core.malloc import retain_freed_memory
from clusterbench.methods.self_distillation.module import LOSSES
from clusterbench.perf.memory_probe import (
    _probe,
    measure_memory,
    measure_memory_subprocess,
    memory_scaling,
)
from clusterbench.perf.model import (
    FULL,
    GIB,
    IMPLEMENTATIONS,
    QUICK,
    Shape,
    block_heads_for,
    memory_model,
    step_flops,
)
from clusterbench.perf.step import (
    GEMM_DTYPES,
    GEMM_LABELS,
    Data,
    gemm_rate,
    lightning_seconds_per_step,
    make_step,
    step_dtype,
    time_steps,
)


# --------------------------------------------------------------------------- report
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "load_average": os.getloadavg(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(
    shape: Shape,
    device: torch.device,
    rounds: int,
    steps: int,
    warmup: int,
    memory: str = "subprocess",
    lightning: bool = True,
    scaling: bool = True,
    quick: bool = False,
    retain_memory: bool = True,
) -> dict:
    """All measurements of the benchmark; returns the JSON-ready report."""
    if retain_memory and device.type == "cpu":  # as SelfDistillationClustering.on_fit_start
        retain_memory = retain_freed_memory()
    flops = step_flops(shape)
    gemm_size = 256 if quick else (2048 if device.type == "cpu" else 8192)
    dtype = step_dtype(shape)  # the steps' products: their fraction is of this rate
    dtypes = ["float32"] + ([dtype] if dtype != "float32" else [])
    report: dict = {
        "machine": machine_info(device),
        "shape": asdict(shape),
        "block_heads": block_heads_for(shape, device),
        "flops_per_step": flops,
        "gemm_size": gemm_size,
        "retain_freed_memory": bool(retain_memory) and device.type == "cpu",
        "protocol": (
            f"best of {rounds} rounds of {steps} steps after {warmup} warm-up steps; fused and "
            "loop interleaved round by round, each round after torch.mm rate measurements ("
            + ", ".join(GEMM_LABELS[d] for d in dtypes)
            + ")"
        ),
        "results": {},
    }
    gemm_rates: dict[str, list[float]] = {d: [] for d in dtypes}
    data = Data(shape, device)
    for loss in LOSSES:
        runners = {impl: make_step(impl, shape, loss, device, data) for impl in IMPLEMENTATIONS}
        for runner in runners.values():
            for _ in range(warmup):
                runner()
        best = {impl: math.inf for impl in IMPLEMENTATIONS}
        for _ in range(rounds):  # interleaved, so a busy moment hits both alike
            for name in dtypes:
                gemm_rates[name].append(gemm_rate(device, gemm_size, dtype=GEMM_DTYPES[name]))
            for impl, runner in runners.items():
                best[impl] = min(best[impl], time_steps(runner, device, steps))
        del runners
        gc.collect()
        report["results"][loss] = {
            impl: {"seconds_per_step": best[impl], "pairs_per_second": shape.b / best[impl]}
            for impl in IMPLEMENTATIONS
        }
        report["results"][loss]["fused_speedup"] = best["loop"] / best["fused"]
    gemm = {name: max(rates) for name, rates in gemm_rates.items()}
    report["gemm_flops_per_second"] = gemm["float32"]  # fp32, whatever the steps' dtype
    report["gemm_flops_per_second_by_dtype"] = gemm
    report["step_dtype"] = dtype
    for loss in LOSSES:
        for impl in IMPLEMENTATIONS:
            row = report["results"][loss][impl]
            row["flops_per_second"] = flops["total"] / row["seconds_per_step"]
            row["gemm_dtype"] = dtype  # the rate gemm_fraction is of
            row["gemm_fraction"] = row["flops_per_second"] / gemm[dtype]
            if memory != "off":
                measure = measure_memory_subprocess if memory == "subprocess" else measure_memory
                row["memory"] = measure(impl, shape, loss, device)
        if memory != "off":
            model = memory_model(shape, loss, report["block_heads"], bf16=shape.bf16)
            report["results"][loss]["fused_memory_model"] = model
    if lightning:
        report["lightning"] = {}
        for loss in LOSSES:
            seconds = lightning_seconds_per_step(shape, loss, device, data, max(steps, 2), warmup)
            fused = report["results"][loss]["fused"]["seconds_per_step"]
            report["lightning"][loss] = {
                "seconds_per_step": seconds,
                "pairs_per_second": shape.b / seconds,
                "overhead_fraction": seconds / fused - 1.0,
            }
    if scaling and memory != "off":
        report["memory_scaling"] = memory_scaling(device, quick=quick)
    return report


def format_report(report: dict) -> str:
    """The tables printed by `make bench`."""
    m, shape = report["machine"], report["shape"]
    lines = [
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
        f"device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""),
        "N={n} D={d} C={c} H={h} B={b} hidden={hidden} bottleneck={bottleneck} "
        "head_chunk={head_chunk} bf16={bf16}".format(**shape)
        + f"; {report['block_heads']} heads per last-layer block",
        report["protocol"],
        f"torch.mm ({report['gemm_size']}^3): "
        + ", ".join(
            f"{GEMM_LABELS[name]} {rate / 1e9:.1f} GFLOP/s"
            for name, rate in report["gemm_flops_per_second_by_dtype"].items()
        )
        + f"; matrix-product FLOPs per step: {report['flops_per_step']['total'] / 1e9:.1f} G",
        f"% mm: a step's GFLOP/s over the torch.mm rate of its own dtype "
        f"({GEMM_LABELS[report['step_dtype']]}), named after the percentage",
        "",
        f"{'loss':7} {'impl':5} {'s/step':>7} {'pairs/s':>8} {'GFLOP/s':>8} {'% mm':>11} "
        f"{'peak MiB':>9} {'step MiB':>9}",
    ]
    for loss in LOSSES:
        for impl in IMPLEMENTATIONS:
            r = report["results"][loss][impl]
            mem = r.get("memory")
            lines.append(
                f"{loss:7} {impl:5} {r['seconds_per_step']:7.3f} {r['pairs_per_second']:8.1f} "
                f"{r['flops_per_second'] / 1e9:8.1f} "
                f"{100 * r['gemm_fraction']:5.1f}% {GEMM_LABELS[r['gemm_dtype']]} "
                + (
                    f"{mem['total'] / 2**20:9.0f} {mem['step'] / 2**20:9.0f}"
                    if mem
                    else f"{'-':>9} {'-':>9}"
                )
            )
        lines.append(f"{'':13} fused is {report['results'][loss]['fused_speedup']:.2f}x the loop")
    lines.append(
        "peak: above the process before the model was built (model, teacher, AdamW state, data, "
        "step); step: the peak above the state before the step"
    )
    for loss, row in report.get("lightning", {}).items():
        lines.append(
            f"lightning.Trainer {loss}: {row['seconds_per_step']:.3f} s/step, "
            f"{row['pairs_per_second']:.1f} pairs/s ({100 * row['overhead_fraction']:+.1f}% vs "
            "the fused step without Lightning)"
        )
    scaling = report.get("memory_scaling")
    if scaling:
        lines += ["", "fused step memory above the state before it, measured vs model (MiB):"]
        for row in scaling["validation"]:
            s = row["shape"]
            meas, model = row["measured_bytes"], row["model_bytes"]
            lines.append(
                f"  {row['loss']:6} B={s['b']:4} C={s['c']:5} H={s['h']} chunk={s['head_chunk']} "
                f"bf16={int(s['bf16'])} k={row['block_heads']}: "
                f"fwd {meas['forward'] / 2**20:7.1f} / {model['forward'] / 2**20:7.1f}  "
                f"bwd {meas['backward'] / 2**20:6.1f} / {model['backward'] / 2**20:6.1f}  "
                f"(RSS {row['measured_rss_bytes']['step'] / 2**20:7.1f})  ratio {row['ratio']:.3f}"
            )
        lines.append("SCANv2, C=10450, B=4096, H=32, D=768, ImageNet-1K features, model (GiB):")
        for name, row in scaling["paper_scanv2_c10450_b4096_h32"].items():
            lines.append(
                f"  {name:40} k={row['block_heads']:2}: {row['fp32']['total'] / GIB:5.1f} fp32, "
                f"{row['bf16_autocast']['total'] / GIB:5.1f} bf16 autocast"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["extract"]:
        from clusterbench.perf.extract import main as extract_main

        return extract_main(argv[1:])
    if argv[:1] == ["assignments"]:
        from clusterbench.perf.assignments import main as assignments_main

        return assignments_main(argv[1:])
    if argv[:1] == ["scale"]:
        from clusterbench.perf.scale import main as scale_main

        return scale_main(argv[1:])
    if argv[:1] == ["distributed"]:
        from clusterbench.perf.distributed import main as distributed_main

        return distributed_main(argv[1:])
    if argv[:1] == ["probing"]:
        from clusterbench.perf.probing import main as probing_main

        return probing_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench perf",
        description="Throughput and memory of the fused TEMI / SCANv2 heads vs a per-head loop.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="bench_results.json", help="JSON report path")
    parser.add_argument("--rounds", type=int, help="timing rounds, the best is kept (5)")
    parser.add_argument("--steps", type=int, help="steps per timing round (3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (2)")
    parser.add_argument("--head-chunk", type=int, help="method.head_chunk of the fused step")
    parser.add_argument("--bf16", action="store_true", help="forward under bf16 autocast")
    parser.add_argument("--memory", choices=["subprocess", "inprocess", "off"])
    parser.add_argument("--no-lightning", action="store_true", help="skip the Trainer timing")
    parser.add_argument("--no-scaling", action="store_true", help="skip the memory-model check")
    parser.add_argument(
        "--no-retain-memory",
        action="store_true",
        help="leave glibc's default of unmapping large freed blocks (CPU)",
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        _probe(args.probe)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    shape = replace(QUICK if args.quick else FULL, head_chunk=args.head_chunk, bf16=args.bf16)
    report = run(
        shape,
        device,
        rounds=args.rounds or (1 if args.quick else 5),
        steps=args.steps or (1 if args.quick else 3),
        warmup=1 if args.quick else args.warmup,
        memory=args.memory or ("inprocess" if args.quick else "subprocess"),
        lightning=not args.no_lightning,
        scaling=not (args.no_scaling or args.quick),
        quick=args.quick,
        retain_memory=not args.no_retain_memory,
    )
    print(format_report(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
