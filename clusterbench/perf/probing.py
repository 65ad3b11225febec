"""The stacked probe grid against the same probes trained one after another.

    python -m clusterbench.perf.probing [--quick] [--device cpu|cuda] [--threads N] [--out PATH]

Both sides run `clusterbench.producers.probe.grid.train_probes`, the code `python -m clusterbench probe`
runs, on the same resident features and labels, seed and epochs: once with all 18 grid cells
stacked, then once per cell (P = 1), one after the other; best of `--rounds` interleaved rounds. The ratio of the times is the gain of
training the grid at once; the weights agree (reported as the largest difference).

FLOP model of one step (batch B, dim D, classes C, P probes): logits 2·B·D·C·P, weight
gradient 2·B·D·C·P (the features need no gradient), so 4·N·D·C·P per epoch. The memory traffic
of one step is about 12 passes over the stacked fp32 weight, 4·P·(D+1)·C bytes each, whatever
B: the forward reads it, the backward writes the gradient, and the update reads and writes
weight, gradient and momentum in its four tensor operations (weight decay into the gradient,
momentum scale, momentum add, weight update). A step also launches a fixed number of kernels
(counted here with torch.profiler: the leaf operators of one step that touch data). The projection
for ImageNet-1K on one GPU, for the paper's protocol, is max(compute + memory, launches): GPU
launches are asynchronous, so they overlap the work when the work takes longer. The GPU's
sustained rates and launch cost are arguments (defaults: an H100-class card).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from clusterbench.producers.probe.grid import ProbeSettings, train_probes

os.environ.setdefault("CLUSTERBENCH_PROGRESS", "0")


@dataclass(frozen=True)
class BenchShape:
    name: str
    n: int
    d: int
    c: int
    epochs: int
    batch: int = 256


SHAPES = (
    # the embedded synthetic default's size (`dataset=synthetic`)
    BenchShape("synthetic", n=20000, d=64, c=100, epochs=1),
    # ImageNet-1K features (D = 1024, C = 1000), a slice of the rows
    BenchShape("in1k_slice", n=2048, d=1024, c=1000, epochs=1),
)
QUICK = (BenchShape("quick", n=512, d=16, c=10, epochs=1, batch=64),)
OVERHEAD = BenchShape("dispatch", n=4096, d=4, c=2, epochs=1, batch=16)
IN1K = {"n": 1281167, "d": 1024, "c": 1000, "epochs": 100, "batch": 256, "holdout": 0.1}


def step_flops(b: int, d: int, c: int, p: int) -> int:
    """Matrix-product FLOPs of one step: forward logits and weight gradient."""
    return 4 * b * d * c * p


def step_bytes(d: int, c: int, p: int) -> int:
    """Approximate memory traffic of one step: ~12 passes over the fp32 stacked weight."""
    return 12 * 4 * p * (d + 1) * c


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(shape: BenchShape, device: torch.device, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(shape.c, shape.d, generator=g)
    labels = torch.randint(0, shape.c, (shape.n,), generator=g)
    x = centres[labels] + 0.5 * torch.randn(shape.n, shape.d, generator=g)
    return x.to(device), labels.to(device)


def _timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def measure(shape: BenchShape, device: torch.device, precision: str, rounds: int = 3) -> dict:
    """Stacked grid vs the 18 cells one after another, same code and data."""
    x, y = _data(shape, device)
    settings = ProbeSettings(epochs=shape.epochs, batch_size=shape.batch, precision=precision)
    cells = settings.cells

    def stacked():
        return train_probes(x, y, None, cells, shape.c, settings, seed=0)

    def one(i: int):
        return train_probes(x, y, None, [cells[i]], shape.c, settings, seed=0)

    one(0)  # warm-up: allocator, kernels
    stacked_s, sequential_s = math.inf, math.inf
    for _ in range(rounds):  # interleaved, best of rounds: a busy moment hits both alike
        seconds, grid = _timed(stacked, device)
        stacked_s = min(stacked_s, seconds)
        singles = [_timed(lambda i=i: one(i), device) for i in range(len(cells))]
        sequential_s = min(sequential_s, sum(t for t, _ in singles))
    gap = max(
        float((grid.model.weight.detach()[i] - single.model.weight.detach()[0]).abs().max())
        for i, (_, single) in enumerate(singles)
    )
    steps = grid.steps
    flops = steps * step_flops(shape.batch, shape.d, shape.c, len(cells))
    return {
        "shape": asdict(shape),
        "probes": len(cells),
        "steps": steps,
        "stacked_s": stacked_s,
        "sequential_s": sequential_s,
        "speedup": sequential_s / stacked_s,
        "stacked_ms_per_step": 1e3 * stacked_s / steps,
        "single_ms_per_step": 1e3 * sequential_s / (steps * len(cells)),
        "stacked_gflops": flops / stacked_s / 1e9,
        "max_weight_difference": gap,
        "bf16": grid.bf16,
    }


# Operators that only reshape or alias a tensor: no kernel runs for them.
NO_KERNEL = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::unsqueeze",
    "aten::squeeze", "aten::as_strided", "aten::permute", "aten::t", "aten::transpose",
    "aten::detach", "aten::alias", "aten::empty", "aten::empty_strided", "aten::resize_",
    "aten::lift_fresh", "aten::select", "aten::slice", "aten::_unsafe_view", "aten::item",
    "aten::_local_scalar_dense", "aten::result_type", "aten::to", "aten::is_nonzero",
}  # fmt: skip


def dispatch_seconds(device: torch.device, precision: str) -> tuple[float, float]:
    """(wall seconds, kernel launches) of one stacked step (18 probes) where the arithmetic is
    negligible: the fixed cost of a step on this device, and what a GPU would launch."""
    x, y = _data(OVERHEAD, device)
    settings = ProbeSettings(epochs=1, batch_size=OVERHEAD.batch, precision=precision)
    train_probes(x[:64], y[:64], None, settings.cells, OVERHEAD.c, settings, seed=0)
    seconds, grid = _timed(
        lambda: train_probes(x, y, None, settings.cells, OVERHEAD.c, settings, seed=0), device
    )
    small = ProbeSettings(epochs=2, batch_size=OVERHEAD.batch, precision=precision)
    counts = []
    for rows in (4 * OVERHEAD.batch, 8 * OVERHEAD.batch):  # the difference is per step
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run = train_probes(x[:rows], y[:rows], None, small.cells, OVERHEAD.c, small, seed=0)
        leaves = [
            e
            for e in prof.events()
            if e.name.startswith("aten::") and not e.cpu_children and e.name not in NO_KERNEL
        ]
        counts.append((len(leaves), run.steps))
    (k1, s1), (k2, s2) = counts
    return seconds / grid.steps, (k2 - k1) / (s2 - s1)


def projection(
    gpu_flops: float, gpu_bandwidth: float, launches_per_step: float, launch_s: float
) -> dict:
    """Time of the paper's protocol on ImageNet-1K (both grids: full train, then 90 %)."""
    n, d, c, b, e = IN1K["n"], IN1K["d"], IN1K["c"], IN1K["batch"], IN1K["epochs"]
    p = 18
    steps = e * (math.ceil(n / b) + math.ceil((1 - IN1K["holdout"]) * n / b))
    flops = steps * step_flops(b, d, c, p)
    traffic = steps * step_bytes(d, c, p)
    compute_s, memory_s = flops / gpu_flops, traffic / gpu_bandwidth
    launch_total = steps * launches_per_step * launch_s
    return {
        "problem": {**IN1K, "probes": p},
        "steps": steps,
        "flops": flops,
        "bytes": traffic,
        "compute_s": compute_s,
        "memory_s": memory_s,
        "launches_per_step": launches_per_step,
        "launch_s": launch_total,
        "projected_s": max(compute_s + memory_s, launch_total),
        "assumed_gpu_flops": gpu_flops,
        "assumed_gpu_bandwidth": gpu_bandwidth,
        "assumed_launch_s": launch_s,
    }


def run(
    device: torch.device,
    quick: bool,
    precision: str,
    gpu_flops: float,
    gpu_bandwidth: float,
    rounds: int = 3,
    gpu_launch_s: float = 5e-6,
) -> dict:
    from clusterbench.perf.step import gemm_rate

    shapes = QUICK if quick else SHAPES
    report: dict = {
        "machine": {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
        },
        "precision": precision,
        "gemm_flops_per_second": gemm_rate(device, 256 if quick else 1024),
        "rounds": rounds,
        "results": [measure(s, device, precision, rounds) for s in shapes],
    }
    seconds, launches = dispatch_seconds(device, precision)
    report["fixed_s_per_step"] = seconds
    report["in1k_projection"] = projection(gpu_flops, gpu_bandwidth, launches, gpu_launch_s)
    return report


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"device {m['device']}, {m['threads']} threads ({m['cpu_capability']}), load "
        f"{m['load_average'][0]:.1f}, torch {m['torch']}, precision {report['precision']}; "
        f"torch.mm fp32 {report['gemm_flops_per_second'] / 1e9:.1f} GFLOP/s; best of "
        f"{report['rounds']} interleaved rounds",
        f"{'shape':11} {'N':>6} {'D':>5} {'C':>5} {'steps':>5} {'stacked s':>9} "
        f"{'18 single s':>11} {'speedup':>7} {'GFLOP/s':>8} {'max |dW|':>9}",
    ]
    for r in report["results"]:
        s = r["shape"]
        lines.append(
            f"{s['name']:11} {s['n']:6} {s['d']:5} {s['c']:5} {r['steps']:5} "
            f"{r['stacked_s']:9.3f} {r['sequential_s']:11.3f} {r['speedup']:6.2f}x "
            f"{r['stacked_gflops']:8.2f} {r['max_weight_difference']:9.1e}"
        )
    p = report["in1k_projection"]
    lines += [
        f"fixed cost of a stacked step here: {1e3 * report['fixed_s_per_step']:.2f} ms; "
        f"{p['launches_per_step']:.0f} kernel launches per step",
        "ImageNet-1K (1.28M x 1024, C = 1000, 18 probes, 100 epochs, batch 256, + the 90 % "
        f"held-out grid): {p['steps']:,} steps, {p['flops'] / 1e15:.1f} PFLOP, "
        f"{p['bytes'] / 1e12:.0f} TB moved",
        f"  at {p['assumed_gpu_flops'] / 1e12:.0f} TFLOP/s, "
        f"{p['assumed_gpu_bandwidth'] / 1e12:.1f} TB/s, {1e6 * p['assumed_launch_s']:.0f} us per "
        f"launch: compute {p['compute_s']:.0f} s + memory {p['memory_s']:.0f} s, launches "
        f"{p['launch_s']:.0f} s; projected {p['projected_s'] / 60:.1f} min",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench.perf.probing",
        description="Stacked 18-probe grid vs the same probes one after another.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "auto"])
    parser.add_argument("--gpu-tflops", type=float, default=400.0, help="sustained, projection")
    parser.add_argument("--gpu-tbps", type=float, default=3.0, help="sustained TB/s, projection")
    parser.add_argument("--gpu-launch-us", type=float, default=5.0, help="per kernel, projection")
    parser.add_argument("--rounds", type=int, help="timing rounds, the best is kept (3)")
    parser.add_argument("--out", default="bench_probing.json", help="JSON report path")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 3)
    report = run(
        device,
        args.quick,
        args.precision,
        args.gpu_tflops * 1e12,
        args.gpu_tbps * 1e12,
        rounds,
        args.gpu_launch_us * 1e-6,
    )
    print(format_report(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
