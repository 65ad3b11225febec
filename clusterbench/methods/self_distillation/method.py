"""TEMI and SCANv2 as clustering methods of a run: pairs -> Lightning fit -> best-head predictions.

This adapter owns the run-level concerns the LightningModule should not know about: input
checks against the data, the Trainer (from the `trainer` config group) with checkpointing,
resume and progress bar, clear messages for NaN losses and accelerator out-of-memory, and
turning the teacher's best head into `Predictions` on rank 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from clusterbench.core.atomic import atomic_file
from clusterbench.core.errors import ClusterbenchError, ConfigError
from clusterbench.evaluation.label_free import HEAD_SCORES
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.self_distillation.module import SelfDistillationClustering
from clusterbench.methods.self_distillation.pairs import NeighbourPairDataModule
from clusterbench.methods.self_distillation.predict import (
    every_head_top1,
    predict,
    teacher_probabilities,
)
from clusterbench.methods.task import ClusteringTask, RequestedK
from clusterbench.methods.training import (
    FiniteLossGuard,
    build_trainer,
    check_checkpoint,
    resume_path,
)

log = logging.getLogger(__name__)


class SelfDistillationMethod:
    """`method=temi` / `method=scanv2`: self-distillation heads on nearest-neighbour pairs."""

    forwards_kwargs_to = SelfDistillationClustering  # **module_kwargs: checked by its types

    def __init__(
        self,
        name: str,
        loss: str,
        num_clusters: RequestedK = None,
        knn: int = 50,
        batch_size: int = 512,
        drop_last: bool = True,
        resume: str | None = "auto",
        features_on_device: bool = True,
        predict_batch_size: int = 65536,
        topk: int = 5,
        checkpoint_every_n_epochs: int = 1,
        head_selection: str = "loss",
        head_selection_sample: int = 5000,
        **module_kwargs: Any,
    ) -> None:
        if head_selection not in ("loss", *HEAD_SCORES):
            raise ConfigError(
                f"method.head_selection={head_selection!r}: expected loss or one of {HEAD_SCORES}"
            )
        self.head_selection, self.head_selection_sample = head_selection, head_selection_sample
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
        epochs = getattr(task.make_trainer, "keywords", {}).get("max_epochs")
        if epochs is not None and int(epochs) < 1:
            raise ConfigError(
                f"trainer.max_epochs={epochs}: training needs at least one epoch (untrained "
                "heads' clusters are not a result)"
            )
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
        return resume_path(self.resume, run_dir)

    def experiment(self, task: ClusteringTask, batch_size: int) -> dict[str, Any]:
        """Everything that changes what training produces: a checkpoint resumes only a run
        with the same record. Memory and output knobs (head_chunk, predict_batch_size, topk,
        features_on_device, the checkpoint interval) are left out: they do not."""
        configured = getattr(task.make_trainer, "keywords", {})
        method = {k: v for k, v in self.module_kwargs.items() if k not in ("head_chunk",)}
        method.update(loss=self.loss, knn=self.knn, batch_size=batch_size, drop_last=self.drop_last)
        trainer = {
            k: configured[k]
            for k in ("max_epochs", "precision", "accumulate_grad_batches", "gradient_clip_val")
            if k in configured
        }
        return {
            "data": task.view.fingerprint,
            "seed": task.seed,
            "num_clusters": task.num_clusters,
            "in_dim": task.view.dim,
            "method": method,
            "trainer": trainer,
        }

    def trainer(self, task: ClusteringTask, experiment: dict[str, Any]) -> Trainer:
        return build_trainer(
            task,
            FiniteLossGuard(
                "training", "try a lower method.base_lr, method.input_norm=l2, or another seed"
            ),
            experiment,
            self.checkpoint_every_n_epochs,
        )

    def fit_predict(self, task: ClusteringTask) -> Predictions | None:
        batch_size = self._check(task)
        view = task.view
        experiment = self.experiment(task, batch_size)
        ckpt = self._resume_path(task.run_dir)
        if ckpt is not None:  # checked before the neighbours are mined or anything is built
            check_checkpoint(ckpt, experiment)
            task.info["resumed_from"] = ckpt
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
        trainer = self.trainer(task, experiment)
        try:
            trainer.fit(self.model, datamodule=data, ckpt_path=ckpt, weights_only=True)
        except SIGTERMException:  # a SystemExit with code 0: the job would look successful
            saved = self._resume_path(task.run_dir)
            raise ClusterbenchError(
                f"terminated by SIGTERM at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}; "
                + (f"the last checkpoint is {saved}" if saved else "no checkpoint was saved yet")
                + f"; rerun the same command with hydra.run.dir={task.run_dir} to resume"
            ) from None
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
        self.device = trainer.strategy.root_device
        if self.head_selection != "loss":
            self.select_head(view.train, task)
        out = predict(
            model, view.val, batch_size=self.predict_batch_size, device=self.device, topk=self.topk
        )
        return Predictions(
            top1=out["top1"].numpy(),
            topk=out["topk"].numpy(),
            num_clusters=task.num_clusters,
            confidence=out["confidence"].numpy(),
        )

    def assign(self, rows) -> Iterator[Assigned]:
        """Every row's top-k clusters from the teacher's best head, with the max softmax
        probability as confidence, chunk by chunk."""
        k = min(self.topk, self.model.num_clusters)
        batches = teacher_probabilities(
            self.model, rows, self.predict_batch_size, None, getattr(self, "device", None)
        )
        for start, probs in batches:
            values, index = probs.topk(k, dim=-1)
            yield Assigned(start, index.cpu().numpy(), values[:, 0].float().cpu().numpy())

    def head_ranking(self) -> list[int]:
        """The teacher's heads best first: the predicting head, then the others by their last
        epoch's loss (what a consensus of the top heads reads, e.g. refine=self_label)."""
        losses = self.model.last_epoch_head_losses.nan_to_num(nan=math.inf).tolist()
        best = int(self.model.best_head)
        return [best, *sorted((h for h in range(len(losses)) if h != best), key=losses.__getitem__)]

    def heads_top1(self, rows, heads: list[int]) -> np.ndarray:
        """(len(heads), N) int32: every row's cluster under each of `heads`, chunk by chunk."""
        out = np.empty((len(heads), len(rows)), dtype=np.int32)
        for start in range(0, len(rows), self.predict_batch_size):
            block = rows.chunk(start, min(start + self.predict_batch_size, len(rows)))
            out[:, start : start + len(block)] = every_head_top1(self.model, block)[heads]
        return out

    def save(self, run_dir: Path) -> str:
        """What prediction needs, `model.pt`: the trained module's weights (teacher and input
        statistics included), its hyper-parameters and the chosen head; loads with
        `torch.load(weights_only=True)`."""
        path = Path(run_dir) / "model.pt"
        with atomic_file(path) as tmp:
            torch.save(
                {
                    "hyper_parameters": dict(self.model.hparams),
                    "state_dict": self.model.state_dict(),
                    "best_head": int(self.model.best_head),
                    "in_dim": int(self.model.hparams["in_dim"]),
                },
                tmp,
            )
        return path.name

    def label_free(self, rows, sample: int, seed: int) -> dict:
        """Agreement of the chosen head with the others: mean NMI of their clusters over a
        seeded sample of rows (heads that agree found the same structure)."""
        from sklearn.metrics import normalized_mutual_info_score

        if self.model.num_heads < 2:
            return {}
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), min(sample, len(rows)),
                                                          replace=False))  # fmt: skip
        heads = every_head_top1(self.model, rows.take(pick))
        best = int(self.model.best_head)
        nmi = [normalized_mutual_info_score(heads[best], heads[h])
               for h in range(len(heads)) if h != best]  # fmt: skip
        return {"head_agreement": {"value": float(np.mean(nmi)), "heads": len(heads),
                                   "sample": int(pick.size), "metric": "mean NMI"}}  # fmt: skip

    def select_head(self, rows, task: ClusteringTask) -> None:
        """Choose the predicting head by a label-free score instead of the lowest loss: every
        head's scores on one seeded sample of train rows, recorded in `method_info`."""
        from clusterbench.data.rows import FeatureRows
        from clusterbench.evaluation.label_free import partition_scores, sampled_neighbours

        n = len(rows)
        pick = np.sort(np.random.default_rng(task.seed).choice(
            n, min(self.head_selection_sample, n), replace=False))  # fmt: skip
        x = np.asarray(rows.take(pick), dtype=np.float32)
        heads = every_head_top1(self.model, x)
        _, table = sampled_neighbours(FeatureRows(x), 10, len(x), task.seed)
        scores = [partition_scores(x, h, self.model.num_clusters, table, task.seed) for h in heads]
        values = [s[self.head_selection] for s in scores]
        chosen = int(np.nanargmax([-np.inf if v is None else v for v in values]))
        task.info["head_selection"] = {
            "by": self.head_selection,
            "chosen": chosen,
            "lowest_loss_head": int(self.model.best_head),
            "sample": int(len(x)),
            "scores": scores,
        }
        self.model.best_head.fill_(chosen)
        task.info["best_head"] = chosen
        task.info["best_head_loss"] = float(self.model.last_epoch_head_losses[chosen])
