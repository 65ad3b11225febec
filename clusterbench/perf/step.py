"""The timed training steps: the fused module's own pieces (`FusedStep`), the per-head
reference loop (`LoopStep`), the GEMM rates they are compared with (fp32, bf16), and a real
Lightning fit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from clusterbench.methods.self_distillation.module import SelfDistillationClustering
from clusterbench.methods.self_distillation.reference import PerHeadLoop
from clusterbench.perf.model import Shape

# The dtypes a step's products run in, by the name the report uses: fp32, or bf16 under
# autocast (`--bf16`), whose products take bf16 inputs and write bf16 outputs.
GEMM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GEMM_LABELS = {"float32": "fp32", "bfloat16": "bf16"}


def step_dtype(shape: Shape) -> str:
    """The dtype of a step's matrix products: the GEMM rate its fraction is taken against."""
    return "bfloat16" if shape.bf16 else "float32"


def gemm_rate(
    device: torch.device,
    size: int,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    max_seconds: float = 0.5,
) -> float:
    """Best `torch.mm` rate (FLOP/s) of a size x size x size product in `dtype`.

    Each of the `repeats` timings runs 2e10 FLOP of products, or fewer where that would take
    over `max_seconds` (judged from a warm product: bf16 emulated on a CPU without a
    bf16 unit is many times slower than fp32)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    _sync(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)  # the second product: warm
    _sync(device)
    warm = time.perf_counter() - start
    reps = max(1, min(int(2e10 / (2 * size**3)), int(max_seconds / max(warm, 1e-9))))
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


def build_model(
    shape: Shape,
    loss: str,
    device: torch.device,
    seed: int = 0,
    block_elements: int | None = None,
) -> SelfDistillationClustering:
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
        block_elements=block_elements,
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


class LoopStep:
    """The same step written head by head (`reference.PerHeadLoop`), with the fused module's
    optimiser and EMA, from the same state as a `FusedStep` of the same model."""

    def __init__(self, model: SelfDistillationClustering, data: Data, lr: float = 1e-4) -> None:
        self.data = data
        self.momentum = model.teacher_momentum
        self.reference = PerHeadLoop(model)
        groups = self.reference.param_groups()
        try:  # the same optimiser as the fused module's
            self.optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            self.optimizer = torch.optim.AdamW(groups, lr=lr)

    def losses(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Per-head losses (H,), gradients accumulated in the per-head student."""
        return self.reference.losses(anchors, neighbours, bf16=self.data.shape.bf16)

    def __call__(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        per_head = self.losses(*self.data.batch())
        self.optimizer.step()
        self.reference.update_teacher(self.momentum)
        return per_head


def make_step(
    impl: str,
    shape: Shape,
    loss: str,
    device: torch.device,
    data: Data | None = None,
    block_elements: int | None = None,
) -> FusedStep | LoopStep:
    data = Data(shape, device) if data is None else data
    model = build_model(shape, loss, device, block_elements=block_elements)
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

    from clusterbench.methods.self_distillation.pairs import NeighbourPairDataModule

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
