"""Commands run in a subprocess, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_module(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a subprocess, as a user runs it: no progress bars, W&B
    quiet, Hydra's one-line errors; `env` adds variables (e.g. CLUSTERBENCH_CACHE)."""
    full_env = {
        **os.environ,
        "CLUSTERBENCH_PROGRESS": "0",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def cli(
    *args: str,
    cwd: Path,
    module: str = "clusterbench",
    cache: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess:
    """`python -m clusterbench <args>` (or another `module`, e.g. clusterbench.benchmarks) run by
    `run_module`; `cache` adds `paths.cache_dir=<cache>` before the args, `env` variables."""
    cache_args = () if cache is None else (f"paths.cache_dir={cache}",)
    return run_module(module, *cache_args, *args, cwd=cwd, **env)
