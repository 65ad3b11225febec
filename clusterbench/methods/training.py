"""What every method trained with Lightning shares (TEMI, SCANv2, TURTLE): the experiment's
record inside each checkpoint, the checkpoint `resume` finds, the check that it belongs to this
experiment before any work, and the Trainer built from the `trainer` config with the
checkpoint, ETA and progress-bar callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from clusterbench.core.errors import ConfigError, TrainingDiverged
from clusterbench.core.progress import RunProgressBar, RunTimeEstimate
from clusterbench.core.progress import enabled as progress_enabled
from clusterbench.methods.task import ClusteringTask

EXPERIMENT_KEY = "clusterbench_experiment"


class FiniteLossGuard(Callback):
    """Stops training at the first non-finite loss, naming epoch and step; `advice` says what
    to try for this method. Checked before backward, so the optimiser never applies a NaN
    update."""

    def __init__(self, what: str, advice: str) -> None:
        self.what, self.advice = what, advice

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Any) -> None:
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"the {self.what} loss became {float(loss.detach())} at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}; {self.advice}. No "
                "results were written."
            )


class ExperimentRecord(Callback):
    """Writes the experiment's record into every checkpoint (epoch-end and SLURM ones alike)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[EXPERIMENT_KEY] = self.record


def differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """'key: saved there, current here' for every leaf that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += differences(saved.get(key), current.get(key), name)
        return out
    return [] if saved == current else [f"{prefix or 'record'}: {saved!r} there, {current!r} here"]


def resume_path(resume: Any, run_dir: Path) -> str | None:
    """`resume=auto`: the newest of the epoch-end `last.ckpt` and the checkpoints Lightning
    saves on SLURM's pre-timeout signal (`hpc_ckpt_*.ckpt` in the run directory); a path: that
    file; null: none."""
    if resume in (None, "none", "null", False):
        return None
    if resume == "auto":
        found = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
        found = [f for f in found if f.exists()]
        return str(max(found, key=lambda f: f.stat().st_mtime_ns)) if found else None
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise ConfigError(f"method.resume={resume}: no checkpoint file there")
    return str(path)


def check_checkpoint(ckpt: str, experiment: dict[str, Any]) -> None:
    """Before any work: the checkpoint must load and be this experiment's."""
    try:
        # weights_only: a checkpoint is data; a crafted file must not run code here.
        saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        record = saved.get(EXPERIMENT_KEY) if isinstance(saved, dict) else None
    except Exception as exc:  # truncated, empty or not a checkpoint: torch's many errors
        raise ConfigError(
            f"checkpoint {ckpt} cannot be read ({type(exc).__name__}: {str(exc)[:120]}); "
            "delete it or set method.resume=null to start fresh"
        ) from None
    if record is None:
        raise ConfigError(
            f"checkpoint {ckpt} does not record which experiment wrote it; resume only "
            "checkpoints of this version, or set method.resume=null to start fresh"
        )
    found = differences(record, experiment)
    if found:
        raise ConfigError(
            f"checkpoint {ckpt} belongs to another experiment ({'; '.join(found[:6])}); "
            "use another hydra.run.dir, or method.resume=null to train from scratch there"
        )


def build_trainer(
    task: ClusteringTask,
    guard: Callback,
    experiment: dict[str, Any],
    every_n_epochs: int = 1,
    **overrides: Any,
) -> Trainer:
    """The run's Trainer: `guard` (stops at a non-finite loss), the experiment record, the
    newest epoch's checkpoint with last.ckpt linked to it (what `resume=auto` reads), the ETA,
    the task's callbacks and, where progress is on, the run's progress bar."""
    if task.make_trainer is None:
        raise ConfigError("method needs a trainer config (trainer=cpu|gpu|ddp)")
    checkpoint = ModelCheckpoint(
        dirpath=task.run_dir / "checkpoints",
        save_top_k=1,
        save_last="link",
        every_n_epochs=every_n_epochs,
        save_on_train_epoch_end=True,
    )
    callbacks = [guard, ExperimentRecord(experiment), checkpoint, RunTimeEstimate(),
                 *task.callbacks]  # fmt: skip
    configured = getattr(task.make_trainer, "keywords", {})
    task.info["precision"] = str(configured.get("precision", "32-true"))
    if progress_enabled() and configured.get("enable_progress_bar", True):
        callbacks.append(RunProgressBar())
    else:
        overrides["enable_progress_bar"] = False
    return task.make_trainer(
        callbacks=callbacks,
        logger=task.loggers or False,
        default_root_dir=str(task.run_dir),
        **overrides,
    )
