"""Experiment loggers (W&B offline by default, CSV, none) for every method.

The loggers are Lightning's own (built by Hydra from `conf/logger/`), so TEMI/SCANv2 hand
them to their Trainer, and plain methods such as k-means log through the same objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import loggers as pl_loggers
from omegaconf import DictConfig, OmegaConf


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's W&B logger with a quiet console.

    Lightning passes `anonymous=None` to `wandb.init`, which wandb (>= 0.19) answers with a
    deprecation warning on every run; it is left out. `quiet` (default) keeps wandb's run
    summary and sync hints off the console: the run prints one line saying where the run's
    dashboard data is (`where_logged`). `quiet: false` gives wandb's own output back.
    """

    def __init__(self, quiet: bool = True, **kwargs: Any) -> None:
        if quiet and "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(silent=True)
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def log_run(loggers: list[Any], cfg: DictConfig, metrics: dict) -> None:
    """Config as hyper-parameters, final metrics as metrics and (for W&B) run summary."""
    params = OmegaConf.to_container(cfg, resolve=True)
    numeric = {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    # The paper table and row a run fills (experiment configs set `paper`), so a dashboard
    # can pivot the runs of one sweep by table and row.
    paper = params.get("paper") if isinstance(params.get("paper"), dict) else {}
    keys = {f"paper/{k}": paper[k] for k in ("table", "row") if paper.get(k) is not None}
    for logger in loggers:
        logger.log_hyperparams(params)
        logger.log_metrics(numeric)
        experiment = getattr(logger, "experiment", None)
        summary = getattr(experiment, "summary", None)
        if summary is not None and hasattr(summary, "update"):
            summary.update({**numeric, **keys})


def close_loggers(loggers: list[Any], status: str) -> None:
    for logger in loggers:
        logger.finalize(status)
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)


def where_logged(loggers: list[Any]) -> list[str]:
    """One line per logger saying where its run is, for the console after a run."""
    lines = []
    for logger in loggers:
        if isinstance(logger, pl_loggers.WandbLogger):
            run_dir = getattr(getattr(logger, "experiment", None), "dir", None)
            if run_dir:
                offline = Path(run_dir).parent  # <save_dir>/wandb/offline-run-*/files
                lines.append(f"W&B (offline), to upload: wandb sync {offline}")
        elif isinstance(logger, pl_loggers.CSVLogger):
            lines.append(f"metrics CSV: {logger.log_dir}")
    return lines
