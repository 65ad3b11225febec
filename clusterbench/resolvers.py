"""OmegaConf resolvers the configs in conf/ use; registered when clusterbench is imported."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def launch_dir() -> str:
    """Where the command was started: Hydra's `runtime.cwd` inside a job, else the process's cwd.

    `${hydra:runtime.cwd}` alone fails while a multirun launcher resolves `hydra.sweep.dir`,
    before any job (and so any HydraConfig) exists; every path under `paths.root_dir` needs it.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.cwd
    return os.getcwd()


OmegaConf.register_new_resolver("launch_dir", launch_dir, replace=True)
