"""Memory probes of one step (peak RSS / allocations on a CPU, CUDA peaks on a GPU), each in
a fresh process, and the scaling check of the memory model."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from clusterbench.core.malloc import set_malloc_thresholds
from clusterbench.perf.model import Shape, block_heads_for, memory_model
from clusterbench.perf.step import FusedStep, make_step


def _rss() -> tuple[int, int]:
    """Current and peak resident set size of this process, in bytes (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _return_freed_memory_to_os() -> None:
    """Serve every allocation above 64 KiB by mmap, so freed tensors leave the RSS at once."""
    set_malloc_thresholds(mmap=64 * 1024, trim=0)  # also stops the mmap threshold's growth


class AllocationTrace:
    """Live tensor bytes over a block of code, from the profiler's allocation events (CPU).

    The exact counterpart of torch.cuda.max_memory_allocated: what was allocated, whether or
    not its pages were touched yet (which the RSS counts). `peak` and `net` are relative to the
    start of the block.
    """

    def __init__(self) -> None:
        self.peak = self.net = 0
        self._profile = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        )

    def __enter__(self) -> AllocationTrace:
        self._profile.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._profile.__exit__(*exc)
        events = [
            e for e in self._profile.profiler.kineto_results.events() if e.name() == "[memory]"
        ]
        live = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            live += event.nbytes()
            peak = max(peak, live)
        self.peak, self.net = peak, live


def measure_memory(
    impl: str, shape: Shape, loss: str, device: torch.device, block_elements: int | None = None
) -> dict:
    """Peak memory of one step, in this process. Call from a fresh process for clean numbers.

    After one step (so AdamW's moments exist) the second step is measured: `resident` is what
    was allocated before it (model, teacher, optimiser state, data), `step` the peak during it
    above that, and `forward`, `backward` the peaks of those phases (fused only). On a GPU these
    come from torch.cuda.max_memory_allocated. On a CPU they are the process's peak RSS (in a
    probe process, `_probe`, every allocation above 64 KiB is mapped and unmapped on its own, so
    the RSS follows the live tensors whose pages have been written), and `allocated` holds the
    same peaks counted from the allocations themselves, as a GPU counts them.
    `block_elements` sets the block size of the fused last layer (None: the device's).
    """
    return _measure_memory(impl, shape, loss, device, block_elements)


def _measure_memory(
    impl: str, shape: Shape, loss: str, device: torch.device, block_elements: int | None
) -> dict:
    cuda = device.type == "cuda"

    def current() -> int:
        if cuda:
            torch.cuda.synchronize(device)
            return torch.cuda.memory_allocated(device)
        return _rss()[0]

    def reset() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            _reset_peak_rss()

    def peak() -> int:
        if cuda:
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        return _rss()[1]

    gc.collect()
    start = current()
    step = make_step(impl, shape, loss, device, block_elements=block_elements)
    step()
    step.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    before = current()
    out: dict = {"resident": before - start}
    allocated: dict = {}
    phases: list[tuple[str, Callable[[], None]]]
    if isinstance(step, FusedStep):
        state: dict = {}

        def forward() -> None:  # the batch stays alive through backward, as in training
            state["batch"] = step.data.batch()
            state["losses"] = step.forward(*state["batch"])

        def backward() -> None:
            state.pop("losses").mean().backward()
            state.clear()

        def update() -> None:
            step.optimizer.step()
            step.model.teacher.update(step.model.student, step.momentum)

        phases = [("forward", forward), ("backward", backward), ("optimizer", update)]
    else:
        phases = [("step", step)]
    offset = 0
    for name, phase in phases:
        reset()
        if cuda:
            phase()
        else:
            with AllocationTrace() as trace:
                phase()
            allocated[name] = offset + trace.peak
            offset += trace.net
        out[name] = peak() - before
    out["step"] = max(out[name] for name, _ in phases)
    out["total"] = out["resident"] + out["step"]
    if allocated:
        allocated["step"] = max(allocated.values())
        out["allocated"] = allocated
    return out


def measure_memory_subprocess(
    impl: str, shape: Shape, loss: str, device: torch.device, block_elements: int | None = None
) -> dict:
    """`measure_memory` in a fresh interpreter, so no earlier allocation blurs the peak."""
    spec = json.dumps(
        {
            "impl": impl,
            "shape": asdict(shape),
            "loss": loss,
            "device": str(device),
            "block_elements": block_elements,
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "clusterbench.perf", "--probe", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe(spec: str) -> None:
    args = json.loads(spec)
    if args["device"] == "cpu":
        _return_freed_memory_to_os()
    result = measure_memory(
        args["impl"],
        Shape(**args["shape"]),
        args["loss"],
        torch.device(args["device"]),
        args.get("block_elements"),
    )
    print(json.dumps(result))


# Reduced scales at which the model is checked against measurements, as (loss, shape, block
# elements): the logit blocks, the TEMI teacher logits and the activations all matter, as at
# the paper's scale. A block of 2^40 elements puts all heads in one block ("no chunking").
ALL_HEADS = 1 << 40
SCALING_CASES = (
    ("scanv2", Shape(n=4096, c=2000, h=8, b=512), None),
    ("scanv2", Shape(n=4096, c=4000, h=8, b=1024), None),
    ("scanv2", Shape(n=4096, c=8000, h=8, b=2048), None),
    ("scanv2", Shape(n=4096, c=4000, h=8, b=1024), ALL_HEADS),
    ("scanv2", Shape(n=4096, c=4000, h=8, b=1024, bf16=True), None),
    ("temi", Shape(n=4096, c=4000, h=8, b=1024), None),
    ("temi", Shape(n=4096, c=4000, h=8, b=1024, head_chunk=2), None),
)
QUICK_SCALING_CASES = (
    ("scanv2", Shape(n=512, c=200, h=4, b=128), None),
    ("temi", Shape(n=512, c=200, h=4, b=128), None),
)
PAPER = Shape(n=1_281_167, c=10_450, h=32, b=4096)  # SCANv2 on ImageNet-1K, C > 6000 (B.4)


def memory_scaling(device: torch.device, quick: bool = False) -> dict:
    """Measured vs modelled step memory of the fused step at reduced scales (each in a fresh
    process), and the model's prediction at the paper's scale."""
    rows = []
    for loss, shape, block_elements in QUICK_SCALING_CASES if quick else SCALING_CASES:
        measured = measure_memory_subprocess("fused", shape, loss, device, block_elements)
        heads = block_heads_for(shape, device, block_elements)
        model = memory_model(shape, loss, heads, bf16=shape.bf16)
        exact = measured.get("allocated", measured)  # allocations, as the model counts them
        rows.append(
            {
                "loss": loss,
                "shape": asdict(shape),
                "block_heads": heads,
                "measured_bytes": {p: exact[p] for p in ("forward", "backward", "step")},
                "measured_rss_bytes": {p: measured[p] for p in ("forward", "backward", "step")},
                "model_bytes": {p: model[p] for p in ("forward", "backward", "step")},
                "ratio": exact["step"] / model["step"],
            }
        )
    paper = {}
    cases = (
        ("no chunking (all 32 heads in one block)", None, PAPER.h),
        ("default blocks on a GPU", None, block_heads_for(PAPER, torch.device("cuda"))),
        ("head_chunk=4", 4, 4),
        ("head_chunk=1", 1, 1),
    )
    for name, chunk, heads in cases:
        shape = replace(PAPER, head_chunk=chunk)
        paper[name] = {
            "head_chunk": chunk,
            "block_heads": heads,
            "fp32": memory_model(shape, "scanv2", heads),
            "bf16_autocast": memory_model(replace(shape, bf16=True), "scanv2", heads, bf16=True),
        }
    return {"validation": rows, "paper_scanv2_c10450_b4096_h32": paper}
