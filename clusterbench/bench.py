"""Training-step throughput and memory of the TEMI / SCANv2 heads: fused vs a per-head loop.

    python -m clusterbench.bench [--quick] [--device cpu|cuda] [--out PATH]

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

Throughput is reported as pairs/s and as a fraction of the fp32 GEMM rate this script measures
with `torch.mm`: the step's matrix-product FLOPs are counted layer by layer (`step_flops`).
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
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from clusterbench.methods import self_distillation as sd
from clusterbench.methods.losses import scan_loss, temi_instance_weight, temi_loss, update_prior
from clusterbench.methods.self_distillation import SelfDistillationClustering

LOSSES = ("temi", "scanv2")
IMPLEMENTATIONS = ("fused", "loop")
GIB = 1 << 30


@dataclass(frozen=True)
class Shape:
    """Problem size (and precision) of one benchmark configuration."""

    n: int = 50_000  # rows of the feature matrix
    d: int = 768  # feature dimension
    c: int = 1000  # clusters per head
    h: int = 32  # heads
    b: int = 512  # pairs per step
    hidden: int = 512
    bottleneck: int = 256
    knn: int = 50
    head_chunk: int | None = None
    bf16: bool = False  # forward under bfloat16 autocast, as Lightning's bf16-mixed

    @property
    def layers(self) -> list[tuple[int, int]]:
        """(in, out) of every matrix product of one head, the last layer included."""
        return [(self.d, self.hidden), (self.hidden, self.bottleneck), (self.bottleneck, self.c)]


FULL = Shape()
QUICK = Shape(n=2_000, d=64, c=40, h=4, b=64, hidden=64, bottleneck=32, knn=10)


# --------------------------------------------------------------------------- FLOPs
def step_flops(shape: Shape) -> dict[str, float]:
    """Matrix-product FLOPs of one step (2 per multiply-add), layer by layer.

    Forward of student and teacher on the 2B rows, and the student's backward: the weight
    gradient of every layer and the input gradient of every layer but the first (the features
    need none). Element-wise work (GELU, normalisation, softmax, loss, AdamW) is not counted.
    """
    rows = 2 * shape.b
    per_layer = [2.0 * rows * i * o * shape.h for i, o in shape.layers]
    forward = sum(per_layer)
    backward = sum(per_layer) + sum(per_layer[1:])
    return {
        "student_forward": forward,
        "teacher_forward": forward,
        "student_backward": backward,
        "total": 2 * forward + backward,
        # The common shortcut backward = 2 x forward also counts the first layer's input
        # gradient, which is never computed; reported for comparison only.
        "total_if_backward_were_2x_forward": 4 * forward,
    }


def gemm_rate(device: torch.device, size: int, repeats: int = 5) -> float:
    """Best fp32 `torch.mm` rate (FLOP/s) of a size x size x size product."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    reps = max(1, int(2e10 / (2 * size**3)))
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# --------------------------------------------------------------------------- steps
class Data:
    """Random features (N, D) and a neighbour table (N, knn), both on the device."""

    def __init__(self, shape: Shape, device: torch.device, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.features = torch.randn(shape.n, shape.d, generator=gen).to(device)
        self.neighbours = torch.randint(0, shape.n, (shape.n, shape.knn), generator=gen).to(device)

    def batch(self) -> tuple[Tensor, Tensor]:
        """B anchor rows and one of their neighbours each, gathered on the device."""
        s, dev = self.shape, self.features.device
        anchors = torch.randint(0, s.n, (s.b,), device=dev)
        columns = torch.randint(0, s.knn, (s.b,), device=dev)
        return self.features[anchors], self.features[self.neighbours[anchors, columns]]


def build_model(shape: Shape, loss: str, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = SelfDistillationClustering(
        shape.d,
        shape.c,
        loss=loss,
        num_heads=shape.h,
        hidden_dim=shape.hidden,
        bottleneck_dim=shape.bottleneck,
        freeze_last_layer_epochs=0,
        head_chunk=shape.head_chunk,
        batch_size=shape.b,
    )
    return model.to(device)


class FusedStep:
    """One training step of `SelfDistillationClustering`, without Lightning."""

    def __init__(self, model: SelfDistillationClustering, data: Data, lr: float = 1e-4) -> None:
        self.model, self.data = model, data
        self.optimizer = model.build_optimizer(lr)
        self.momentum = model.teacher_momentum

    def forward(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        with _autocast(anchors.device, self.data.shape.bf16):
            return self.model.head_losses(anchors, neighbours)

    def losses(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Per-head losses (H,), gradients accumulated in the student."""
        per_head = self.forward(anchors, neighbours)
        per_head.mean().backward()
        return per_head.detach()

    def __call__(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        per_head = self.losses(*self.data.batch())
        self.optimizer.step()
        self.model.teacher.update(self.model.student, self.momentum)
        return per_head


class L2Normalize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


def loop_heads(heads) -> nn.ModuleList:
    """One nn.Sequential per head with the weights of `FusedHeads` `heads` (copied)."""
    out = nn.ModuleList()
    for h in range(heads.num_heads):
        layers: list[nn.Module] = []
        for i, layer in enumerate(heads.mlp):
            lin = nn.Linear(*layer.weight.shape[1:], device=layer.weight.device)
            with torch.no_grad():
                lin.weight.copy_(layer.weight[h].T)
                lin.bias.copy_(layer.bias[h])
            layers.append(lin)
            if i < len(heads.mlp) - 1:
                layers.append(nn.GELU())
        layers.append(L2Normalize())
        in_dim, out_dim = heads.last_layer.weight_v.shape[1:]
        last = nn.Linear(in_dim, out_dim, bias=False, device=heads.last_layer.weight_v.device)
        last = weight_norm(last)
        with torch.no_grad():
            params = last.parametrizations.weight
            params.original0.copy_(heads.last_layer.weight_g[h][:, None])
            params.original1.copy_(heads.last_layer.weight_v[h].T)
        layers.append(last)
        out.append(nn.Sequential(*layers))
    return out


class LoopStep:
    """The same step written head by head: the per-head-loop reference.

    Built from a `SelfDistillationClustering` (its weights, temperatures and prior), so both
    implementations start from the same state.
    """

    def __init__(self, model: SelfDistillationClustering, data: Data, lr: float = 1e-4) -> None:
        self.data = data
        self.loss_name = model.loss_name
        self.num_heads, self.num_clusters = model.num_heads, model.num_clusters
        self.student_temp, self.teacher_temp = model.student_temp, model.teacher_temperature()
        self.beta, self.alpha, self.prior_momentum = model.beta, model.alpha, model.prior_momentum
        self.momentum = model.teacher_momentum
        self.input_norm = model.input_norm
        self.prior = model.prior.clone()
        self.student = loop_heads(model.student)
        self.teacher = loop_heads(model.teacher.module).requires_grad_(False)
        decay, no_decay = [], []
        for name, param in self.student.named_parameters():
            is_vector = name.endswith("bias") or name.endswith("original0")
            (no_decay if is_vector else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": model.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        try:  # the same optimiser as the fused module's
            self.optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            self.optimizer = torch.optim.AdamW(groups, lr=lr)

    def losses(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Per-head losses (H,); each head's loss / H is back-propagated right away."""
        b, c = anchors.shape[0], self.num_clusters
        x = self.input_norm(torch.cat([anchors, neighbours]))

        autocast = _autocast(x.device, self.data.shape.bf16)

        def teacher_log_probs(h: int) -> Tensor:
            with torch.no_grad(), autocast:
                logits = self.teacher[h](x).float() / self.teacher_temp
                return F.log_softmax(logits, dim=-1).view(1, 2, b, c)

        teacher: list[Tensor] = []
        weight = None
        if self.loss_name == "temi":
            with torch.no_grad():
                teacher = [teacher_log_probs(h) for h in range(self.num_heads)]
                probs = [t.exp() for t in teacher]
                weight = torch.stack([temi_instance_weight(p) for p in probs]).mean(dim=0)
                batch_mean = torch.cat([p.mean(dim=(1, 2)) for p in probs])
                self.prior = update_prior(self.prior, batch_mean, self.prior_momentum)
                del probs
        out = []
        for h, head in enumerate(self.student):
            teacher_h = teacher[h] if teacher else teacher_log_probs(h)
            with autocast:
                logits = head(x).float() / self.student_temp
                log_ps = F.log_softmax(logits, dim=-1).view(1, 2, b, c)
                if self.loss_name == "temi":
                    prior = self.prior[h : h + 1]
                    loss = temi_loss(log_ps, teacher_h, prior, self.beta, weight)
                else:
                    loss = scan_loss(log_ps, teacher_h, self.alpha)
            (loss.sum() / self.num_heads).backward()
            out.append(loss.detach())
        return torch.cat(out)

    def __call__(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        per_head = self.losses(*self.data.batch())
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.teacher.parameters()),
                list(self.student.parameters()),
                1.0 - self.momentum,
            )
        return per_head


def make_step(
    impl: str, shape: Shape, loss: str, device: torch.device, data: Data | None = None
) -> FusedStep | LoopStep:
    data = Data(shape, device) if data is None else data
    model = build_model(shape, loss, device)
    return FusedStep(model, data) if impl == "fused" else LoopStep(model, data)


def time_steps(step: Callable[[], Tensor], device: torch.device, steps: int) -> float:
    """Mean seconds per step over `steps` consecutive steps."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


# --------------------------------------------------------------------------- Lightning
def lightning_seconds_per_step(
    shape: Shape, loss: str, device: torch.device, data: Data, steps: int, warmup: int
) -> float:
    """Best seconds per step through `lightning.Trainer.fit` (data loading, hooks, logging)."""
    import logging
    import warnings

    import lightning as L

    from clusterbench.methods.pairs import NeighbourPairDataModule

    times: list[float] = []

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.last: float | None = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _sync(device)
            now = time.perf_counter()
            if self.last is not None and batch_idx > warmup:
                times.append(now - self.last)
            self.last = now

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    model = build_model(shape, loss, device)
    datamodule = NeighbourPairDataModule(
        data.features, data.neighbours.cpu(), knn=shape.knn, batch_size=shape.b
    )
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=warmup + steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepClock()],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    return min(times)


# --------------------------------------------------------------------------- memory
def memory_model(shape: Shape, loss: str, block_heads: int, bf16: bool = False) -> dict:
    """Bytes of the fused step, by part, counted from the tensors alive at its peaks.

    Elements, with R = 2B rows, D input, F hidden, K bottleneck, C clusters, H heads, k heads
    per block of last layer and loss (`block_heads`: at most head_chunk, and the device's block
    limit), P = H (D F + F + F K + K + K C + C) the parameters of one network:

    persistent  4 P                 student, teacher, AdamW's two moments (float32)
    data        N D                 features (float32) on the device
    forward     2 R D               gathered rows and the normalised input
                + 2 H R K           teacher and student bottleneck features
                + 2 H R F           pre- and post-GELU hidden layer, saved for backward
                + H R K + H K C     closed-form gradients w.r.t. h and the last layer's v
                + k R K + k K C     the block's normalised features and weight
                + 4 k R C           the block: logits, teacher logits, two softmaxes;
                                    TEMI without head_chunk: H R C teacher logits kept for
                                    all heads (its pair weight needs them) + 3 k R C
    backward    2 R D + 3 H R F + H R K + H K C + H F K
                                    at the second layer's backward: both hidden tensors and
                                    the gradient w.r.t. them, the gradients w.r.t. h, v, W2
    optimiser   P gradients
    step        max(forward, backward, optimiser); total = persistent + data + step

    All float32 (4 bytes). Under bf16 autocast (`bf16`) the activations H R F, H R K and a copy
    of the input R D take 2 bytes, the student's bf16 weight copies H (D F + F K) are cached
    for backward, and each block adds a 2-byte copy of its product; the logit blocks and
    everything the size of a parameter stay float32.
    """
    h, r, c = shape.h, 2 * shape.b, shape.c
    d, f, k = shape.d, shape.hidden, shape.bottleneck
    params = h * (d * f + f + f * k + k + k * c + c)
    kb = min(block_heads, h)
    block = kb * r * c
    chunked = shape.head_chunk is not None and shape.head_chunk < h
    blocks = h * r * c + 3 * block if loss == "temi" and not chunked else 4 * block
    act = 2 if bf16 else 4  # bytes per activation element
    rows = 2 * r * d * 4 + (r * d * 2 + h * (d * f + f * k) * 2 if bf16 else 0)
    forward = (
        rows
        + (2 * h * r * k + 2 * h * r * f + h * r * k + kb * r * k) * act
        + (h * k * c + kb * k * c) * 4
        + blocks * 4
        + (block * 2 if bf16 else 0)
    )
    backward = rows + (3 * h * r * f + h * r * k) * act + (h * k * c + h * f * k) * 4
    parts = {
        "persistent": 4 * params * 4,
        "data": shape.n * shape.d * 4,
        "forward": forward,
        "backward": backward,
        "optimizer": params * 4,
    }
    parts["step"] = max(parts["forward"], parts["backward"], parts["optimizer"])
    parts["total"] = parts["persistent"] + parts["data"] + parts["step"]
    return parts


def block_heads_for(shape: Shape, device: torch.device, block_elements: int | None = None) -> int:
    """Heads per last-layer block the fused step uses for `shape` on `device`."""
    if block_elements is None:
        cpu = device.type == "cpu"
        block_elements = sd.CPU_BLOCK_ELEMENTS if cpu else sd.ACCELERATOR_BLOCK_ELEMENTS
    per_block = max(block_elements // (2 * shape.b * shape.c), 1)
    return min(per_block, shape.head_chunk or shape.h, shape.h)


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
    sd.set_malloc_thresholds(mmap=64 * 1024, trim=0)  # also stops the mmap threshold's growth


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
    `block_elements` overrides the block size of the fused last layer meanwhile.
    """
    name = "CPU_BLOCK_ELEMENTS" if device.type == "cpu" else "ACCELERATOR_BLOCK_ELEMENTS"
    default = getattr(sd, name)
    if block_elements is not None:
        setattr(sd, name, block_elements)
    try:
        return _measure_memory(impl, shape, loss, device)
    finally:
        setattr(sd, name, default)


def _measure_memory(impl: str, shape: Shape, loss: str, device: torch.device) -> dict:
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
    step = make_step(impl, shape, loss, device)
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
        [sys.executable, "-m", "clusterbench.bench", "--probe", spec],
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
        retain_memory = sd.retain_freed_memory()
    flops = step_flops(shape)
    gemm_size = 256 if quick else (2048 if device.type == "cpu" else 8192)
    report: dict = {
        "machine": machine_info(device),
        "shape": asdict(shape),
        "block_heads": block_heads_for(shape, device),
        "flops_per_step": flops,
        "gemm_size": gemm_size,
        "retain_freed_memory": bool(retain_memory) and device.type == "cpu",
        "protocol": (
            f"best of {rounds} rounds of {steps} steps after {warmup} warm-up steps; fused and "
            "loop interleaved round by round, each round after a torch.mm rate measurement"
        ),
        "results": {},
    }
    gemm_rates: list[float] = []
    data = Data(shape, device)
    for loss in LOSSES:
        runners = {impl: make_step(impl, shape, loss, device, data) for impl in IMPLEMENTATIONS}
        for runner in runners.values():
            for _ in range(warmup):
                runner()
        best = {impl: math.inf for impl in IMPLEMENTATIONS}
        for _ in range(rounds):  # interleaved, so a busy moment hits both alike
            gemm_rates.append(gemm_rate(device, gemm_size))
            for impl, runner in runners.items():
                best[impl] = min(best[impl], time_steps(runner, device, steps))
        del runners
        gc.collect()
        report["results"][loss] = {
            impl: {"seconds_per_step": best[impl], "pairs_per_second": shape.b / best[impl]}
            for impl in IMPLEMENTATIONS
        }
        report["results"][loss]["fused_speedup"] = best["loop"] / best["fused"]
    gemm = max(gemm_rates)
    report["gemm_flops_per_second"] = gemm
    for loss in LOSSES:
        for impl in IMPLEMENTATIONS:
            row = report["results"][loss][impl]
            row["flops_per_second"] = flops["total"] / row["seconds_per_step"]
            row["gemm_fraction"] = row["flops_per_second"] / gemm
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
        f"torch.mm fp32 ({report['gemm_size']}^3): "
        f"{report['gemm_flops_per_second'] / 1e9:.1f} GFLOP/s; "
        f"matrix-product FLOPs per step: {report['flops_per_step']['total'] / 1e9:.1f} G",
        "",
        f"{'loss':7} {'impl':5} {'s/step':>7} {'pairs/s':>8} {'GFLOP/s':>8} {'% mm':>6} "
        f"{'peak MiB':>9} {'step MiB':>9}",
    ]
    for loss in LOSSES:
        for impl in IMPLEMENTATIONS:
            r = report["results"][loss][impl]
            mem = r.get("memory")
            lines.append(
                f"{loss:7} {impl:5} {r['seconds_per_step']:7.3f} {r['pairs_per_second']:8.1f} "
                f"{r['flops_per_second'] / 1e9:8.1f} {100 * r['gemm_fraction']:5.1f}% "
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
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench.bench",
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
