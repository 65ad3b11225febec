"""`method=turtle`: TURTLE's task encoder trained with Lightning on every representation space
of the view, then the mean softmax over spaces predicts, chunk by chunk.

This adapter owns the run-level concerns: setting checks (at construction), the Trainer from
the `trainer` config group with checkpoints, resume and progress bar, turning the encoder's
labelling into `Predictions` on rank 0, and the saved task encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from clusterbench.core.atomic import atomic_file
from clusterbench.core.errors import ClusterbenchError, ConfigError
from clusterbench.evaluation.predictions import Assigned, Predictions
from clusterbench.methods.task import ClusteringTask, RequestedK
from clusterbench.methods.training import (
    FiniteLossGuard,
    build_trainer,
    check_checkpoint,
    resume_path,
)
from clusterbench.methods.turtle.data import TurtleDataModule
from clusterbench.methods.turtle.module import TurtleClustering, labellings

log = logging.getLogger(__name__)


def epoch_length(total: int, wanted: int) -> int:
    """The largest divisor of `total` steps that is at most `wanted`: T steps in whole epochs."""
    return max(d for d in range(1, min(total, wanted) + 1) if total % d == 0)


class Turtle:
    """`method=turtle`: TURTLE (Gadetsky et al., ICML 2024) on the view's spaces.

    Args (reference names from its run_turtle.py): T outer steps, M inner steps per outer
    step, batch_size rows per outer step (at most N), inner_lr / outer_lr the two Adam
    learning rates, gamma the entropy weight, warm_start to keep the inner classifiers
    across steps. steps_per_epoch groups outer steps into Lightning epochs (checkpoints,
    epoch logs; training does not depend on it).
    """

    name = "turtle"

    def __init__(
        self,
        name: str = "turtle",
        num_clusters: RequestedK = None,
        T: int = 6000,
        M: int = 10,
        batch_size: int = 10000,
        inner_lr: float = 1e-3,
        outer_lr: float = 1e-3,
        gamma: float = 10.0,
        warm_start: bool = False,
        steps_per_epoch: int = 100,
        features_on_device: bool = True,
        predict_batch_size: int = 65536,
        topk: int = 5,
        resume: str | None = "auto",
    ) -> None:
        checks = [
            (gamma < 0, f"method.gamma={gamma} must be >= 0"),
            (T < 1, f"method.T={T} must be >= 1 (outer steps)"),
            (M < 1, f"method.M={M} must be >= 1 (inner steps per outer step)"),
            (batch_size < 1, f"method.batch_size={batch_size} must be >= 1"),
            (not inner_lr > 0, f"method.inner_lr={inner_lr} must be > 0"),
            (not outer_lr > 0, f"method.outer_lr={outer_lr} must be > 0"),
            (steps_per_epoch < 1, f"method.steps_per_epoch={steps_per_epoch} must be >= 1"),
            (predict_batch_size < 1, f"method.predict_batch_size={predict_batch_size} must be >= 1"),
            (topk < 1, f"method.topk={topk} must be >= 1"),
        ]  # fmt: skip
        for bad, message in checks:
            if bad:
                raise ConfigError(message)
        self.name, self.num_clusters = name, num_clusters
        self.T, self.M, self.batch_size = int(T), int(M), int(batch_size)
        self.inner_lr, self.outer_lr, self.gamma = float(inner_lr), float(outer_lr), float(gamma)
        self.warm_start = bool(warm_start)
        self.steps_per_epoch = int(steps_per_epoch)
        self.features_on_device = bool(features_on_device)
        self.predict_batch_size, self.topk, self.resume = int(predict_batch_size), int(topk), resume
        self.model: TurtleClustering | None = None
        self.spaces = 1
        self.device: torch.device | None = None

    # ----------------------------------------------------------------- bookkeeping
    def experiment(self, task: ClusteringTask, dims: list[int]) -> dict[str, Any]:
        """What changes training: a checkpoint resumes only a run with the same record."""
        configured = getattr(task.make_trainer, "keywords", {})
        return {
            "data": task.view.fingerprint,
            "seed": task.seed,
            "num_clusters": task.num_clusters,
            "dims": list(dims),
            "method": {
                "T": self.T,
                "M": self.M,
                "batch_size": self.batch_size,
                "inner_lr": self.inner_lr,
                "outer_lr": self.outer_lr,
                "gamma": self.gamma,
                "warm_start": self.warm_start,
                "steps_per_epoch": self.steps_per_epoch,
            },  # fmt: skip
            "trainer": {k: configured[k] for k in ("precision",) if k in configured},
        }

    def _resume_path(self, run_dir: Path) -> str | None:
        return resume_path(self.resume, run_dir)

    def trainer(
        self, task: ClusteringTask, experiment: dict[str, Any], steps_per_epoch: int
    ) -> Trainer:
        # The length is method.T outer steps in whole epochs (trainer.max_epochs is not used):
        # epoch-based, so a resumed run continues at the next epoch (with max_steps Lightning
        # would resume inside the finished one).
        return build_trainer(task, FiniteLossGuard("TURTLE", "try lower method.outer_lr / "
                             "method.inner_lr, or another seed"), experiment, 1,
                             max_epochs=self.T // steps_per_epoch)  # fmt: skip

    # ----------------------------------------------------------------- fit and predict
    def fit_predict(self, task: ClusteringTask) -> Predictions | None:
        spaces = task.view.spaces("train")
        dims = [s.dim for s in spaces]
        n = len(spaces[0])
        batch = min(self.batch_size, n)  # the reference's min(batch_size, N)
        if batch < self.batch_size:
            task.info["batch_size_requested"] = self.batch_size
        steps_per_epoch = epoch_length(self.T, self.steps_per_epoch)
        experiment = self.experiment(task, dims)
        ckpt = self._resume_path(task.run_dir)
        if ckpt is not None:
            check_checkpoint(ckpt, experiment)
            task.info["resumed_from"] = ckpt
        data = TurtleDataModule(spaces, batch, steps_per_epoch, task.seed, self.features_on_device)
        self.model = TurtleClustering(
            dims, task.num_clusters, gamma=self.gamma, M=self.M, inner_lr=self.inner_lr,
            outer_lr=self.outer_lr, warm_start=self.warm_start, seed=task.seed,
        )  # fmt: skip
        self.spaces = len(dims)
        trainer = self.trainer(task, experiment, steps_per_epoch)
        try:
            trainer.fit(self.model, datamodule=data, ckpt_path=ckpt, weights_only=True)
        except SIGTERMException:
            saved = self._resume_path(task.run_dir)
            raise ClusterbenchError(
                f"terminated by SIGTERM at step {trainer.global_step}; "
                + (f"the last checkpoint is {saved}" if saved else "no checkpoint was saved yet")
                + f"; rerun the same command with hydra.run.dir={task.run_dir} to resume"
            ) from None
        except torch.OutOfMemoryError:
            raise ClusterbenchError(
                f"out of accelerator memory training turtle with batch_size={batch} on "
                f"{len(dims)} spaces; lower method.batch_size or set "
                "method.features_on_device=false"
            ) from None
        if trainer.interrupted:
            raise ClusterbenchError(
                "training was interrupted; rerun with the same "
                f"hydra.run.dir={task.run_dir} to resume from the last checkpoint"
            )
        if trainer.global_rank != 0:
            return None
        self.device = trainer.strategy.root_device
        last = {k: float(v) for k, v in self.model.last.items()}
        task.info.update(
            steps=int(trainer.global_step),
            steps_per_epoch=steps_per_epoch,
            steps_per_second=self.model.steps_per_second(),
            spaces=len(dims),
            space_dims=dims,
            batch_size=(batch // trainer.world_size) * trainer.world_size,
            final_pred_error=last.get("pred_error"),
            final_entropy=last.get("entropy"),
            final_loss=(last["pred_error"] - self.gamma * last["entropy"]) if last else None,
        )  # fmt: skip
        top, confidence = self._predict(task.view.spaces("val"))
        task.info["clusters_found_val"] = int(np.unique(top[:, 0]).size)
        return Predictions(
            top1=top[:, 0], topk=top, num_clusters=task.num_clusters, confidence=confidence
        )

    def _predict(self, spaces) -> tuple[np.ndarray, np.ndarray]:
        n = len(spaces[0])
        k = min(self.topk, self.model.num_clusters)
        top = np.empty((n, k), dtype=np.int64)
        confidence = np.empty(n, dtype=np.float32)
        for part in self._assign(spaces):
            top[part.start : part.start + len(part)] = part.topk
            confidence[part.start : part.start + len(part)] = part.confidence
        return top, confidence

    def _assign(self, spaces) -> Iterator[Assigned]:
        if self.model is None:
            raise RuntimeError("Turtle.assign called before fit_predict")
        k = min(self.topk, self.model.num_clusters)
        encoder = self.model.encoder
        for start, probs in labellings(encoder, spaces, self.predict_batch_size, self.device):
            values, index = probs.topk(k, dim=-1)
            yield Assigned(start, index.cpu().numpy(), values[:, 0].cpu().numpy())

    def assign(self, rows) -> Iterator[Assigned]:
        """Every row's top-k clusters under the mean softmax over spaces, with its maximum as
        confidence, chunk by chunk. `rows`: the run's `view.train` or `view.val` (their
        spaces are read through `spaces_of`), or a list of row-aligned spaces."""
        return self._assign(self.spaces_of(rows))

    def spaces_of(self, rows) -> list:
        if isinstance(rows, list | tuple):
            return list(rows)
        spaces = getattr(rows, "spaces", None)  # several spaces side by side
        if spaces is not None:
            return list(spaces)
        if self.spaces != 1:
            raise ConfigError(
                f"the task encoder needs {self.spaces} representation spaces; pass them as a "
                "list of row-aligned rows"
            )
        return [rows]

    def save(self, run_dir: Path) -> str:
        """`task_encoder.pt`: per space a plain Linear's weight (C, d_s) and bias (C,), the
        weight norm folded in, under `phi1`, `phi2`, ... (the reference's checkpoint keys);
        loads with `torch.load(weights_only=True)`."""
        path = Path(run_dir) / "task_encoder.pt"
        encoder = self.model.encoder
        with atomic_file(path) as tmp:
            torch.save(
                {
                    "task_encoder": {
                        f"phi{i + 1}": state for i, state in enumerate(encoder.folded())
                    },
                    "dims": list(encoder.dims),
                    "num_clusters": int(encoder.num_clusters),
                    "hyper_parameters": dict(self.model.hparams),
                },
                tmp,
            )
        return path.name


class SavedTaskEncoder:
    """A saved `task_encoder.pt` as a predictor for `clusterbench assign`: the mean over spaces
    of softmax(W_s z_s + b_s), from the folded weights alone (loaded with weights_only)."""

    def __init__(self, path: Path, topk: int = 5, batch_size: int = 65536) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        phis = saved["task_encoder"]
        self.layers = [(phis[f"phi{i + 1}"]["weight"], phis[f"phi{i + 1}"]["bias"])
                       for i in range(len(phis))]  # fmt: skip
        self.num_clusters = int(saved["num_clusters"])
        self.topk, self.batch_size = min(topk, self.num_clusters), batch_size

    def assign(self, rows) -> Iterator[Assigned]:
        spaces = list(rows) if isinstance(rows, list | tuple) else [rows]
        if len(spaces) != len(self.layers):
            raise ConfigError(
                f"the task encoder was trained on {len(self.layers)} representation spaces; "
                f"{len(spaces)} given (assign new rows of a one-space run, or pass every space)"
            )
        for start in range(0, len(spaces[0]), self.batch_size):
            stop = min(start + self.batch_size, len(spaces[0]))
            probs = sum(
                torch.softmax(torch.as_tensor(s.chunk(start, stop)).float() @ w.T + b, dim=-1)
                for s, (w, b) in zip(spaces, self.layers, strict=True)
            ) / len(self.layers)
            values, index = probs.topk(self.topk, dim=-1)
            yield Assigned(start, index.numpy(), values[:, 0].numpy())
