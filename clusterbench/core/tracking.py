"""Experiment loggers (W&B offline by default, CSV, none) for every method.

The loggers are Lightning's own (built by Hydra from `conf/logger/`), so TEMI/SCANv2 hand
them to their Trainer, and plain methods such as k-means log through the same objects.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


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
