"""The linear-probe grid trained at once: P probes as one stacked weight (P, D, C).

Protocol (paper, appendix C.3): a linear layer on the frozen, precomputed features, SGD with
momentum 0.9, 100 epochs, no augmentation, a grid of learning rates x weight decays. What C.3
leaves open follows the authors' linear evaluation code (TEMI-official-BMVC2023,
linear_evaluation.py): batch size 256, weights ~ N(0, 0.01), bias 0, cosine learning-rate decay
to 0 without warm-up, and no input normalisation (its `--l2_norm` defaults to False).

One departure by default: `probe.normalize: standardize` (zero mean, unit variance per
dimension, train statistics), what MAE's linear probing does with a BatchNorm without affine
parameters before the linear layer (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022, appendix A.1). With raw features the grid's lr <= 5e-3 and 100 epochs
underfit any store whose rows have a small norm (L2-normalised CLIP/DINO embeddings: the
probe then measures the grid, not the features); standardised rows make the number
independent of the feature scale. `probe.normalize=none` is the paper's / TEMI's setting.

Every probe sees the same batches (one permutation per epoch, drawn from the seed) and starts
from the same weights, so the grid cells differ only in their hyperparameters, and probe p of
the stack trains exactly as it would alone (a test checks it). One step: a batched product
(P, B, D) x (P, D, C), the summed per-probe cross-entropies (each probe's gradient is that of
its own mean loss), and one SGD update of all probes with per-probe lr and weight decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clusterbench.core.config import check_fields
from clusterbench.core.device import block_elements, probe_uses_bf16
from clusterbench.core.errors import ConfigError, TrainingDiverged
from clusterbench.core.malloc import retain_freed_memory
from clusterbench.core.progress import progress
from clusterbench.data.normalize import NORMALIZATIONS
from clusterbench.methods.linear import StackedLinear, StackedSGD
from clusterbench.producers.probe.data import FEATURE_DTYPES

# The grid of appendix C.3.
PAPER_LRS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)
PAPER_WEIGHT_DECAYS = (0.0, 1e-3, 1e-5)
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "32", "bf16")
EVAL_ELEMENTS = block_elements("probe_scores", accelerator=False)  # same on both
# P x D x C elements of the stacked weight a run may allocate: 2^30 float32 = 4 GiB, and as
# much again for its gradient and its momentum. ImageNet-21K (18 x 1536 x 10450) is 2.9e8.
MAX_WEIGHT_ELEMENTS = 1 << 30
# "Still falling": the last epoch's mean training loss below the one before by more than this
# fraction per epoch at the full learning rate (see TrainedGrid.loss_drop).
FALLING_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Cell:
    lr: float
    weight_decay: float

    def as_dict(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}


@dataclass
class ProbeSettings:
    """`probe:` of conf/probe.yaml (instantiated by Hydra); validated on creation."""

    lrs: list[float] = field(default_factory=lambda: list(PAPER_LRS))
    weight_decays: list[float] = field(default_factory=lambda: list(PAPER_WEIGHT_DECAYS))
    epochs: int = 100
    batch_size: int = 256
    momentum: float = 0.9
    schedule: str = "cosine"
    normalize: str = "standardize"  # "none": the paper's raw features
    holdout: float = 0.1
    precision: str | int = "auto"  # `precision: 32` is read as an int
    feature_dtype: str = "auto"

    def __post_init__(self) -> None:
        check_fields(self, "probe")
        self.lrs = [float(v) for v in self.lrs]
        self.weight_decays = [float(v) for v in self.weight_decays]
        if not self.lrs or not self.weight_decays:
            raise ConfigError("probe.lrs and probe.weight_decays must each list at least one value")
        if min(self.lrs) <= 0 or min(self.weight_decays) < 0:
            raise ConfigError("probe.lrs must be > 0 and probe.weight_decays >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"probe.epochs and probe.batch_size must be >= 1, got {self.epochs} and "
                f"{self.batch_size}"
            )
        if not 0 <= float(self.momentum) < 1:
            raise ConfigError(f"probe.momentum must be in [0, 1), got {self.momentum}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"probe.schedule={self.schedule!r}: expected one of {SCHEDULES}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"probe.normalize={self.normalize!r}: expected one of {NORMALIZATIONS}"
            )
        if self.feature_dtype != "auto" and self.feature_dtype not in FEATURE_DTYPES:
            raise ConfigError(
                f"probe.feature_dtype={self.feature_dtype!r}: expected auto or one of "
                f"{list(FEATURE_DTYPES)}"
            )
        if not 0 <= float(self.holdout) < 1:
            raise ConfigError(f"probe.holdout must be a fraction in [0, 1), got {self.holdout}")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(f"probe.precision={self.precision!r}: expected one of {PRECISIONS}")
        self.momentum, self.holdout = float(self.momentum), float(self.holdout)
        self.precision = str(self.precision)

    @property
    def cells(self) -> list[Cell]:
        """Grid cells, learning rate major: cell i is probe i of the stack."""
        return [Cell(lr, wd) for lr in self.lrs for wd in self.weight_decays]


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier at `step` of `total`: cosine decay to 0 (no warm-up) or 1."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


@dataclass
class TrainedGrid:
    """The trained stack and what training recorded per probe."""

    model: StackedLinear
    train_loss: np.ndarray  # (P,) mean loss of the last epoch
    diverged: np.ndarray  # (P,) bool: loss or weights not finite
    steps: int
    bf16: bool
    previous_loss: np.ndarray | None = None  # (P,) mean loss of the epoch before; None: 1 epoch
    last_lr_factor: float = 1.0  # the lr multiplier where the last epoch starts
    rows: int = 0  # training rows

    def loss_drop(self) -> np.ndarray | None:
        """(P,) how fast each probe's loss still fell at the end: the last epoch's mean loss
        below the previous one's, as a fraction of it, per unit of learning-rate multiplier
        (divided by `last_lr_factor`). With cosine decay the last of 100 epochs starts at
        2.5e-4 of the peak lr, so its loss is flat even for a probe far from converged;
        divided, the number is the drop an epoch at the full lr would give. Drops within the rounding
        noise of the epoch means (bf16 logits: 2^-8, float32: 2^-20, over sqrt(rows)) are 0.
        None with a single epoch (nothing to compare)."""
        if self.previous_loss is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            drop = (self.previous_loss - self.train_loss) / np.abs(self.previous_loss)
        noise = (2.0**-8 if self.bf16 else 2.0**-20) / math.sqrt(max(self.rows, 1))
        drop = np.where(np.isfinite(drop) & (drop > noise), drop, 0.0)
        return drop / self.last_lr_factor


def check_weight_budget(
    probes: int, dim: int, num_classes: int, source: str, labels: tuple[np.ndarray, ...] = ()
) -> None:
    """Refuse, in one line naming `source` (where the class count comes from, e.g. a store's
    classes.txt) and how many classes the `labels` use, a grid whose stacked weight
    P x D x C exceeds MAX_WEIGHT_ELEMENTS, before any feature is read.

    C is the view's class count, not the labels in use: the per-class accuracies, the class
    names and the tree ids are indexed by it, so a classes.txt listing a million classes that
    the labels never use is refused rather than silently shrunk."""
    elements = probes * dim * num_classes
    if elements <= MAX_WEIGHT_ELEMENTS:
        return
    in_use = f" (the labels use {np.unique(np.concatenate(labels)).size:,})" if labels else ""
    raise ConfigError(
        f"{source} lists {num_classes:,} classes{in_use}: the probes' stacked weight would be "
        f"{probes} probes x {dim} dims x {num_classes:,} classes = {elements:.3g} floats "
        f"({4 * elements / 2**30:,.1f} GiB, 3x that with gradients and momentum), over the "
        f"probe's budget of {MAX_WEIGHT_ELEMENTS:.3g}; list only the classes in use, or "
        "probe fewer cells (probe.lrs, probe.weight_decays)"
    )


def train_probes(
    features: Tensor,
    labels: Tensor,
    rows: Tensor | None,
    cells: list[Cell],
    num_classes: int,
    settings: ProbeSettings,
    seed: int,
    describe: str = "probes",
) -> TrainedGrid:
    """Train one probe per cell on `features[rows]` (all rows when None), all at once.

    `features` (N, D) and `labels` (N,) live on the training device; each step gathers one
    batch from them, so the data is read once per epoch whatever the number of probes.
    """
    device = features.device
    if device.type == "cpu":
        # Weight-sized gradients are freed and allocated every step: keep glibc from handing
        # back fresh pages each time (the page faults cost as much as the SGD update).
        retain_freed_memory()
    rows = torch.arange(features.shape[0], device=device) if rows is None else rows.to(device)
    n, p = int(rows.shape[0]), len(cells)
    if n == 0:
        raise ConfigError(f"{describe}: no training samples")
    # One N(0, 0.01) draw shared by every probe: cells differ only in hyperparameters.
    model = StackedLinear(p, features.shape[1], num_classes, 0.01, shared_seed=seed).to(device)
    optimizer = StackedSGD(
        [model.weight, model.bias],
        [c.lr for c in cells],
        [c.weight_decay for c in cells],
        settings.momentum,
    )
    generator = torch.Generator().manual_seed(seed)
    batch = min(settings.batch_size, n)
    per_epoch = -(-n // batch)
    total = settings.epochs * per_epoch
    bf16 = probe_uses_bf16(settings.precision, device)
    epoch_loss = torch.zeros(p, dtype=torch.float64, device=device)
    previous_loss = torch.zeros_like(epoch_loss)
    step = 0
    for _ in progress(range(settings.epochs), f"training {p} {describe} on {n:,} rows"):
        order = rows[torch.randperm(n, generator=generator).to(device)]
        previous_loss.copy_(epoch_loss)
        epoch_loss.zero_()
        for start in range(0, n, batch):
            index = order[start : start + batch]
            x, y = features[index].float(), labels[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            losses = F.cross_entropy(
                logits.float().reshape(-1, num_classes), y.repeat(p), reduction="none"
            ).view(p, -1)
            per_probe = losses.mean(1)
            model.weight.grad = model.bias.grad = None
            per_probe.sum().backward()
            optimizer.step(lr_factor(settings.schedule, step, total))
            epoch_loss += per_probe.detach().double() * index.shape[0]
            step += 1
    train_loss = (epoch_loss / n).cpu().numpy()
    finite = torch.isfinite(model.weight.detach()).flatten(1).all(1)
    finite &= torch.isfinite(model.bias.detach()).all(1)
    diverged = ~finite.cpu().numpy() | ~np.isfinite(train_loss)
    if diverged.all():
        raise TrainingDiverged(
            f"every probe diverged (loss not finite) on {describe}; lower probe.lrs or set "
            "probe.normalize=l2 or standardize"
        )
    return TrainedGrid(
        model,
        train_loss,
        diverged,
        step,
        bf16,
        previous_loss=(previous_loss / n).cpu().numpy() if settings.epochs > 1 else None,
        last_lr_factor=lr_factor(settings.schedule, total - per_epoch, total),
        rows=n,
    )


@torch.no_grad()
def predict_topk(
    model: StackedLinear,
    features: Tensor,
    k: int,
    rows: Tensor | None = None,
    max_elements: int = EVAL_ELEMENTS,
) -> Tensor:
    """(P, N, k) top-k classes of every probe for `features[rows]` (all rows when None), best
    first, on the CPU. Rows are gathered and scored in chunks, so neither a copy of the rows
    nor more than `max_elements` logits exist at once."""
    p, c = model.num_stacked, model.bias.shape[1]
    k = min(k, c)
    n = features.shape[0] if rows is None else int(rows.shape[0])
    chunk = max(1, max_elements // (p * c))
    out = torch.empty((p, n, k), dtype=torch.int64)
    for start in range(0, n, chunk):
        block = (
            features[start : start + chunk]
            if rows is None
            else features[rows[start : start + chunk]]
        )
        logits = model(block.float())
        out[:, start : start + logits.shape[1]] = logits.topk(k, dim=2).indices.cpu()
    return out
