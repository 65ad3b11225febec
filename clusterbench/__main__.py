"""`python -m clusterbench [overrides]`: the Hydra entry point (config root: conf/)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from clusterbench.cli import quiet_libraries, run_command

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from clusterbench.run import run  # heavy imports after Hydra has parsed the command line

    quiet_libraries()
    return run_command(lambda: run(cfg, Path(HydraConfig.get().runtime.output_dir), Console()))


if __name__ == "__main__":
    main()
