"""TEMI and SCANv2 as clustering methods of a run: pairs -> Lightning fit -> best-head predictions.

This adapter owns the run-level concerns the LightningModule should not know about: input
checks against the data, the Trainer (from the `trainer` config group) with checkpointing,
resume and progress bar, clear messages for NaN losses and accelerator out-of-memory, and
turning the teacher's best head into `Predictions` on rank 0.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from clusterbench.errors import ClusterbenchError, ConfigError, TrainingDiverged
from clusterbench.evaluation.predictions import Predictions
from clusterbench.methods.self_distillation.module import SelfDistillationClustering
from clusterbench.methods.self_distillation.pairs import NeighbourPairDataModule
from clusterbench.progress import enabled as progress_enabled
from clusterbench.task import ClusteringTask

log = logging.getLogger(__name__)


class FiniteLossGuard(Callback):
    """Stops training at the first non-finite loss, naming epoch and step."""

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Any) -> None:
        # Checked before backward, so the optimizer never applies a NaN update.
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"the training loss became {float(loss.detach())} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; try a lower method.base_lr, method.input_norm=l2, "
                "or another seed. No results were written."
            )


class SelfDistillationMethod:
    """`method=temi` / `method=scanv2`: self-distillation heads on nearest-neighbour pairs."""

    def __init__(
        self,
        name: str,
        loss: str,
        num_clusters: int | None = None,
        knn: int = 50,
        batch_size: int = 512,
        drop_last: bool = True,
        resume: str | None = "auto",
        features_on_device: bool = True,
        predict_batch_size: int = 65536,
        topk: int = 5,
        checkpoint_every_n_epochs: int = 1,
        **module_kwargs: Any,
    ) -> None:
        self.name, self.loss, self.num_clusters = name, loss, num_clusters
        self.knn, self.batch_size, self.resume = int(knn), int(batch_size), resume
        self.drop_last = bool(drop_last)
        self.features_on_device = features_on_device
        self.predict_batch_size = predict_batch_size
        self.topk = int(topk)
        self.checkpoint_every_n_epochs = checkpoint_every_n_epochs
        self.module_kwargs = module_kwargs
        self.model: SelfDistillationClustering | None = None

    def _check(self, task: ClusteringTask) -> int:
        """Checks the settings against the data; returns the batch size to train with.

        A batch larger than the training set (the paper's B = 4096 on a small data set) would
        give no full batch at all: it is clipped to the training set, with a warning, and
        results.json records both (`batch_size`, `batch_size_requested`).
        """
        n = len(task.view.train)
        if not 1 <= self.knn < n:
            raise ConfigError(f"method.knn={self.knn} must be in [1, N-1] for N={n} train samples")
        if self.batch_size < 1:
            raise ConfigError(f"method.batch_size={self.batch_size} must be >= 1")
        if self.batch_size > n:
            log.warning(
                "method.batch_size=%d exceeds the %d training samples; training with "
                "batch_size=%d (one step per epoch)",
                self.batch_size,
                n,
                n,
            )
            task.info["batch_size_requested"] = self.batch_size
            return n
        return self.batch_size

    def _resume_path(self, run_dir: Path) -> str | None:
        if self.resume in (None, "none", "null", False):
            return None
        if self.resume == "auto":
            last = run_dir / "checkpoints" / "last.ckpt"
            return str(last) if last.exists() else None
        path = Path(str(self.resume)).expanduser()
        if not path.is_file():
            raise ConfigError(f"method.resume={self.resume}: no checkpoint file there")
        return str(path)

    def _check_checkpoint(self, ckpt: str, in_dim: int, num_clusters: int) -> None:
        hparams = torch.load(ckpt, map_location="cpu", weights_only=False).get(
            "hyper_parameters", {}
        )
        for key, expected in (
            ("in_dim", in_dim),
            ("num_clusters", num_clusters),
            ("num_heads", self.module_kwargs.get("num_heads")),
        ):
            found = hparams.get(key)
            if expected is not None and found is not None and int(found) != int(expected):
                raise ConfigError(
                    f"checkpoint {ckpt} has {key}={found} but this run has {key}={expected}; "
                    "resume only the same setting (or set method.resume=null)"
                )

    def trainer(self, task: ClusteringTask, callbacks: list[Callback]) -> Trainer:
        if task.make_trainer is None:
            raise ConfigError("method needs a trainer config (trainer=cpu|gpu|ddp)")
        # The newest epoch's checkpoint, with last.ckpt linked to it: what `resume=auto` reads.
        checkpoint = ModelCheckpoint(
            dirpath=task.run_dir / "checkpoints",
            save_top_k=1,
            save_last="link",
            every_n_epochs=self.checkpoint_every_n_epochs,
            save_on_train_epoch_end=True,
        )
        callbacks = [FiniteLossGuard(), checkpoint, *callbacks]
        configured = getattr(task.make_trainer, "keywords", {})
        task.info["precision"] = str(configured.get("precision", "32-true"))
        extra: dict[str, Any] = {}
        if progress_enabled() and configured.get("enable_progress_bar", True):
            callbacks.append(RichProgressBar())
        else:
            extra["enable_progress_bar"] = False
        return task.make_trainer(
            callbacks=callbacks,
            logger=task.loggers or False,
            default_root_dir=str(task.run_dir),
            **extra,
        )

    def fit_predict(self, task: ClusteringTask) -> Predictions | None:
        batch_size = self._check(task)
        view = task.view
        data = NeighbourPairDataModule(
            view.train,
            task.neighbours_for(self.knn),
            knn=self.knn,
            batch_size=batch_size,
            seed=task.seed,
            features_on_device=self.features_on_device,
            drop_last=self.drop_last,
        )
        self.model = SelfDistillationClustering(
            in_dim=view.dim,
            num_clusters=task.num_clusters,
            loss=self.loss,  # the batch size (for the lr scaling) comes from the DataModule
            **self.module_kwargs,
        )
        trainer = self.trainer(task, task.callbacks)
        ckpt = self._resume_path(task.run_dir)
        if ckpt is not None:
            self._check_checkpoint(ckpt, view.dim, task.num_clusters)
            task.info["resumed_from"] = ckpt
        try:
            trainer.fit(self.model, datamodule=data, ckpt_path=ckpt)
        except torch.OutOfMemoryError:
            raise ClusterbenchError(
                f"out of accelerator memory training {self.name} with batch_size="
                f"{batch_size}, {self.model.num_heads} heads, {task.num_clusters} clusters; "
                "lower method.batch_size, set method.head_chunk (e.g. 4), use "
                "trainer.precision=bf16-mixed, or method.features_on_device=false"
            ) from None
        if trainer.interrupted:
            raise ClusterbenchError(
                "training was interrupted; rerun with the same "
                f"hydra.run.dir={task.run_dir} to resume from the last checkpoint"
            )
        if trainer.global_rank != 0:
            return None  # rank 0 evaluates and writes the results
        model = self.model
        losses = model.last_epoch_head_losses.tolist()
        task.info.update(
            best_head=int(model.best_head),
            best_head_loss=float(losses[int(model.best_head)]),
            head_losses_last_epoch=[v if math.isfinite(v) else None for v in losses],
            epochs=int(trainer.current_epoch),
            steps=int(trainer.global_step),
            knn=self.knn,
            batch_size=batch_size,
            warmup_epochs=model.resolved_warmup_epochs(),
        )
        out = model.predict(
            view.val,
            batch_size=self.predict_batch_size,
            device=trainer.strategy.root_device,
            topk=self.topk,
        )
        return Predictions(
            top1=out["top1"].numpy(),
            topk=out["topk"].numpy(),
            num_clusters=task.num_clusters,
            confidence=out["confidence"].numpy(),
        )
