"""`python -m clusterbench.probe dataset=NAME [extractor=NAME] [overrides]` (conf/probe.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from clusterbench.cli import quiet_libraries, run_command


@hydra.main(config_path="../../conf", config_name="probe", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from clusterbench.probe.run import run  # heavy imports after Hydra has parsed the command line

    quiet_libraries()
    return run_command(lambda: run(cfg, Path(HydraConfig.get().runtime.output_dir), Console()))


if __name__ == "__main__":
    main()
