"""Self-distillation clustering on precomputed features: TEMI and SCANv2 in one LightningModule.

Student and teacher are `FusedHeads` (H heads); the teacher is an EMA of the student. Each step
gets B pairs (x, x') of features, runs both views through both networks and minimises the loss
chosen by name, averaged over heads:
    'temi'   Eq. 1, with the teacher cluster prior updated (EMA) before the loss;
    'scanv2' Eq. 2, consistency plus alpha times the negative entropy of the student marginal.
After every epoch the head with the lowest mean training loss becomes `best_head`; predictions
come from the teacher's best head. Prior, teacher, statistics and best head are module state, so
a Lightning checkpoint restores all of them.

Expected input: batches as produced by `NeighbourPairDataModule` (dicts with `anchor` and
`neighbour` feature tensors of shape (B, D)).
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from torch import Tensor

from clusterbench.core.distributed import check_same_on_every_rank, distributed_mean
from clusterbench.core.errors import ConfigError
from clusterbench.core.malloc import retain_freed_memory
from clusterbench.data.rows import as_rows, chunks
from clusterbench.methods.self_distillation.ema import MomentumTeacher
from clusterbench.methods.self_distillation.fused import (
    ACCELERATOR_BLOCK_ELEMENTS,
    CPU_BLOCK_ELEMENTS,
    LastLayerLoss,
    autocast_dtype,
    split_blocks,
)
from clusterbench.methods.self_distillation.heads import (
    INPUT_NORMS,
    FusedHeads,
    InputNorm,
    weight_decay_groups,
)
from clusterbench.methods.self_distillation.objectives import (
    ScanObjective,
    TeacherLogits,
    TemiObjective,
)
from clusterbench.methods.self_distillation.schedules import cosine_schedule, linear_warmup

LOSSES = ("temi", "scanv2")
REFERENCE_BATCH = 256  # learning rates are given for this batch size (linear scaling rule)


class SelfDistillationClustering(L.LightningModule):
    """TEMI / SCANv2 clustering heads trained by self-distillation on nearest-neighbour pairs.

    Args:
        in_dim: feature dimension D.
        num_clusters: clusters C per head.
        loss: 'temi' (Eq. 1) or 'scanv2' (Eq. 2).
        num_heads: H independent heads (the paper uses 32).
        hidden_dim, bottleneck_dim, num_hidden_layers: head MLP shape (512, 256, 1 by default:
            Linear(D, 512) -> GELU -> Linear(512, 256)).
        input_norm: 'none', 'l2', or 'standardize' with the train mean/std.
        beta: TEMI exponent (0.6). alpha: SCANv2 entropy weight (5).
        prior_momentum: EMA momentum of the TEMI cluster prior (0.9).
        student_temp: student softmax temperature (0.1).
        teacher_temp: teacher temperature after warm-up (0.1); also used by `predict`.
        warmup_teacher_temp, warmup_teacher_temp_epochs: linear per-epoch warm-up of the
            teacher temperature (start value; None means no warm-up).
        teacher_momentum, final_teacher_momentum: EMA momentum, cosine from the first to the
            second over training; final None keeps it constant (0.996, the reference's
            recommended `--max_momentum_teacher=0.996`; DINO's 1.0 is the alternative).
        base_lr, min_lr: AdamW learning rate for a batch of 256 pairs, scaled by
            batch_size / 256; cosine from base_lr to min_lr after warm-up (min_lr None: flat,
            the reference's `--lr=1e-4 --min_lr=1e-4`).
        warmup_epochs: linear learning-rate warm-up from 0, in epochs; None takes
            `default_warmup_epochs(max_epochs)` = min(20, max_epochs // 2).
        weight_decay: AdamW decay of weight matrices and weight-norm gains (not biases).
        batch_size: global pairs per step, for the lr scaling; None takes the datamodule's.
        freeze_last_layer_epochs: epochs during which the last layer gets no updates.
        head_chunk: at most this many heads' (2B, C) logits at a time in the last layer and
            loss (None: as many as the device's block size allows, see `_block_heads`). Their
            gradients are taken in closed form, so nothing is recomputed, except that TEMI
            keeps every head's teacher logits when None and recomputes them per chunk when set.
        block_elements: float32 elements per block tensor of the fused last layer (None: the
            device's default, `fused.CPU_BLOCK_ELEMENTS` or `fused.ACCELERATOR_BLOCK_ELEMENTS`).
    """

    def __init__(
        self,
        in_dim: int,
        num_clusters: int,
        loss: str = "temi",
        num_heads: int = 32,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        num_hidden_layers: int = 1,
        input_norm: str = "none",
        beta: float = 0.6,
        alpha: float = 5.0,
        prior_momentum: float = 0.9,
        student_temp: float = 0.1,
        teacher_temp: float = 0.1,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_epochs: int = 0,
        teacher_momentum: float = 0.996,
        final_teacher_momentum: float | None = None,
        base_lr: float = 1e-4,
        min_lr: float | None = None,
        warmup_epochs: int | None = None,
        weight_decay: float = 1e-4,
        batch_size: int | None = None,
        freeze_last_layer_epochs: int = 1,
        head_chunk: int | None = None,
        block_elements: int | None = None,
    ) -> None:
        super().__init__()
        loss = loss.lower()
        if loss not in LOSSES:
            raise ConfigError(f"method.loss must be one of {LOSSES}, got {loss!r}")
        if input_norm not in INPUT_NORMS:
            raise ConfigError(f"method.input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if num_clusters < 2 or num_heads < 1:
            raise ConfigError(
                f"need num_clusters >= 2 and num_heads >= 1, got {num_clusters}, {num_heads}"
            )
        if base_lr <= 0:
            raise ConfigError(f"method.base_lr must be > 0, got {base_lr}")
        if warmup_epochs is not None and warmup_epochs < 0:
            raise ConfigError(f"method.warmup_epochs must be >= 0 or null, got {warmup_epochs}")
        self.save_hyperparameters()
        self.loss_name = loss
        self.objective = (
            TemiObjective(beta, prior_momentum) if loss == "temi" else ScanObjective(alpha)
        )
        self.num_heads = num_heads
        self.num_clusters = num_clusters
        self.beta, self.alpha = beta, alpha
        self.prior_momentum = prior_momentum
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.warmup_teacher_temp = (
            teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
        )
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.teacher_momentum = teacher_momentum
        self.final_teacher_momentum = (
            teacher_momentum if final_teacher_momentum is None else final_teacher_momentum
        )
        self.base_lr, self.min_lr = base_lr, min_lr
        self.warmup_epochs, self.weight_decay = warmup_epochs, weight_decay
        self.batch_size = batch_size
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.head_chunk = head_chunk
        self.block_elements = block_elements

        self.input_norm = InputNorm(in_dim, input_norm)
        self.student = FusedHeads(
            in_dim, num_clusters, num_heads, hidden_dim, bottleneck_dim, num_hidden_layers
        )
        self.teacher = MomentumTeacher(self.student)
        # q~_t(c) of Eq. 1 per head, uniform at the start.
        self.register_buffer("prior", torch.full((num_heads, num_clusters), 1.0 / num_clusters))
        self.register_buffer("best_head", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_epoch_head_losses", torch.full((num_heads,), float("nan")))
        # Epoch accumulators are plain tensors, not buffers: DDP would overwrite buffers with
        # rank 0's values at every forward.
        self._loss_sum: Tensor | None = None
        self._loss_count = 0
        self._step = 0
        self._steps_per_epoch = 1
        self._total_steps = 1

    # ----------------------------------------------------------------- schedules
    def teacher_temperature(self, epoch: int | None = None) -> float:
        epoch = self.current_epoch if epoch is None else epoch
        return linear_warmup(
            epoch, self.warmup_teacher_temp_epochs, self.warmup_teacher_temp, self.teacher_temp
        )

    def teacher_momentum_at(self, step: int) -> float:
        return cosine_schedule(
            step, self._total_steps, self.teacher_momentum, self.final_teacher_momentum
        )

    def resolved_warmup_epochs(self) -> int:
        """`warmup_epochs`, or when None the default for this run's length."""
        if self.warmup_epochs is not None:
            return int(self.warmup_epochs)
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0:  # a max_steps run: its length in epochs
            epochs = self._total_steps // self._steps_per_epoch
        return default_warmup_epochs(int(epochs))

    def _global_batch_size(self) -> int:
        datamodule = getattr(self.trainer, "datamodule", None)
        from_data = getattr(datamodule, "batch_size", None)
        if self.batch_size and from_data and int(from_data) != int(self.batch_size):
            raise ConfigError(
                f"method batch_size={self.batch_size} differs from the data batch_size={from_data}"
            )
        size = self.batch_size or from_data
        if not size:
            raise ConfigError(
                "batch_size is needed to scale the learning rate: pass it to the "
                "method or train with NeighbourPairDataModule"
            )
        return int(size)

    # ----------------------------------------------------------------- model
    def forward(self, features: Tensor) -> Tensor:
        """Student logits of every head: features (M, D) -> (H, M, C)."""
        return self.student(self.input_norm(features))

    def head_losses(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Per-head loss (H,) of a batch of pairs; for TEMI also updates the prior first.

        anchors, neighbours: (B, D) raw features of x and x'.
        The L2 normalisation, the last layer and the loss run a block of heads at a time with
        their gradients in closed form (`LastLayerLoss`): no (H, 2B, C) tensor is kept for
        the backward pass and none is recomputed.
        """
        b, c = anchors.shape[0], self.num_clusters
        x = self.input_norm(torch.cat([anchors, neighbours]))  # (2B, D): views stacked
        dtype = autocast_dtype(x.device) or torch.float32  # of the last layer's products
        teacher = self.teacher.module
        with torch.no_grad():
            # The teacher sees the views swapped: its row i is the partner of student row i.
            h_t = teacher.bottleneck(torch.cat([x[b:], x[:b]]))  # (H, 2B, K)
            scale_t = teacher.last_layer.column_scale(scale=1.0 / self.teacher_temperature())
        h_s = self.student.bottleneck(x)  # (H, 2B, K)
        head_chunks = self.student.head_slices(self.head_chunk)
        blocks = split_blocks(head_chunks, self._block_heads(2 * b * c, x.device))
        teacher_logits = TeacherLogits(h_t, teacher.last_layer.weight_v, scale_t, dtype)
        block_loss = self.objective.block_loss(
            teacher_logits, blocks, keep=len(head_chunks) == 1, prior=self.prior
        )
        last = self.student.last_layer
        return LastLayerLoss.apply(
            h_s, last.weight_v, last.weight_g, 1.0 / self.student_temp, blocks, block_loss, dtype
        )

    def _block_heads(self, block_elements: int, device: torch.device) -> int:
        """Heads per block of the last layer and loss.

        At most `self.block_elements` float32 elements per (2B, C)-shaped block tensor; by
        default on a CPU about the size of the last-level cache (4 heads at B=512, C=1000;
        single heads lose more in smaller GEMM batches than they gain in cache hits), on an
        accelerator 1 GiB (all 32 heads at B=512, C=1000; 3 at B=4096, C=10450).
        """
        limit = self.block_elements or (
            CPU_BLOCK_ELEMENTS if device.type == "cpu" else ACCELERATOR_BLOCK_ELEMENTS
        )
        return max(1, limit // max(block_elements, 1))

    # ----------------------------------------------------------------- training
    def configure_optimizers(self) -> dict:
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError(
                "set trainer.max_epochs or trainer.max_steps: the schedules need a length"
            )
        self._total_steps = max(int(total), 1)
        self._steps_per_epoch = max(int(self.trainer.num_training_batches), 1)
        scale = self._global_batch_size() / REFERENCE_BATCH
        peak = self.base_lr * scale
        final = (self.base_lr if self.min_lr is None else self.min_lr) * scale
        warmup_steps = self.resolved_warmup_epochs() * self._steps_per_epoch
        total_steps = self._total_steps

        def lr_factor(step: int) -> float:
            return cosine_schedule(step, total_steps, peak, final, warmup_steps) / peak

        optimizer = self.build_optimizer(peak)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def build_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """AdamW over the student (decay on weight matrices only).

        The fused kernel (one pass per tensor) where this torch has it for the parameters'
        device: at 32 heads the update touches ~25M parameters every step.
        """
        groups = weight_decay_groups(self.student.named_parameters(), self.weight_decay)
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(groups, lr=lr)

    def setup(self, stage: str) -> None:
        # Under DDP each rank built its heads alone, e.g. at a K it estimated itself; before
        # DDP broadcasts the parameters, every rank must have the same number of clusters.
        check_same_on_every_rank(self.num_clusters, "method.num_clusters")

    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            retain_freed_memory()
        if self.trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "accumulate_grad_batches must be 1: the teacher and prior update "
                "every batch; raise batch_size instead"
            )
        if self.input_norm.needs_statistics:
            features = getattr(getattr(self.trainer, "datamodule", None), "features", None)
            if features is None:
                raise ConfigError(
                    "input_norm='standardize' needs train statistics: train with "
                    "NeighbourPairDataModule or call fit_input_statistics(features) first"
                )
            self.fit_input_statistics(features)

    def fit_input_statistics(self, features, chunk_rows: int = 65536) -> None:
        """Set the standardisation mean/std from the train features (any supported form)."""
        self.input_norm.fit(
            torch.as_tensor(block) for _, block in chunks(as_rows(features), chunk_rows)
        )

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros(self.num_heads, dtype=torch.float64, device=self.device)
        self._loss_count = 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        anchors, neighbours = batch["anchor"], batch["neighbour"]
        n = anchors.shape[0]
        self._step = self.global_step
        per_head = self.head_losses(anchors, neighbours)
        loss = per_head.mean()
        if self._loss_sum is None:
            self.on_train_epoch_start()
        self._loss_sum += per_head.detach().double() * n
        self._loss_count += n

        # Epoch means are logged from the exact, cross-process accumulators in on_train_epoch_end.
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        self.log("train/teacher_momentum", self.teacher_momentum_at(self._step), batch_size=n)
        self.log("train/teacher_temp", self.teacher_temperature(), batch_size=n)
        for name, value in self.objective.logs(self.prior).items():
            self.log(name, value, batch_size=n)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # DINO's cancel_gradients_last_layer: no gradient, so AdamW leaves the layer untouched.
        if self.current_epoch < self.freeze_last_layer_epochs:
            for param in self.student.last_layer.parameters():
                param.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.teacher.update(self.student, self.teacher_momentum_at(self._step))

    def on_train_epoch_end(self) -> None:
        if self._loss_sum is None:
            return
        means = distributed_mean(self._loss_sum, self._loss_count)  # (H,), equal on all ranks
        self.last_epoch_head_losses.copy_(means.float())
        self.best_head.fill_(int(torch.argmin(means.nan_to_num(nan=math.inf))))
        # Already equal on every process: sync_dist only averages identical values.
        log = partial(self.log, on_epoch=True, sync_dist=True)
        for i, value in enumerate(means.tolist()):
            log(f"train/head_loss/{i:02d}", value)
        log("train/loss_epoch", float(means.mean()))
        log("train/best_head", float(self.best_head))
        log("train/best_head_loss", float(means[self.best_head]))
        self._loss_sum = None


REFERENCE_WARMUP_EPOCHS = 20  # the reference README's `--warmup_epochs=20` (of 100 epochs)


def default_warmup_epochs(max_epochs: int) -> int:
    """min(20, max_epochs // 2): the reference's 20 warm-up epochs, at most half of the run.

    The reference command warms up for 20 of 100 epochs; the paper trains 50 (ImageNet-1K) or
    25 (ImageNet-21K) epochs, where 20 epochs of warm-up would leave a 25-epoch run only 5 at
    the full rate. Capping at half keeps the reference's value wherever it leaves at least as
    many epochs at the full rate as it warms up (>= 40 epochs: 20; 25 epochs: 12).
    """
    return min(REFERENCE_WARMUP_EPOCHS, max(int(max_epochs), 0) // 2)


__all__ = ["LOSSES", "SelfDistillationClustering", "default_warmup_epochs"]
