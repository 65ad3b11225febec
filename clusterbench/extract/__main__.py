"""`python -m clusterbench.extract extractor=NAME images.root=DIR store=OUT_DIR [overrides]`.

Same config root as `python -m clusterbench` (conf/), primary config conf/extract.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from clusterbench.__main__ import CONFIG_DIR
from clusterbench.cli import fail, quiet_libraries, run_command


def known_extractors() -> list[str]:
    """Extractor configs that name a model (`library:`), i.e. the ones extraction can run."""
    names = []
    for file in sorted((Path(CONFIG_DIR) / "extractor").glob("*.yaml")):
        if "library" in (OmegaConf.load(file) or {}):
            names.append(file.stem)
    return names


def extractor_problem(argv: list[str]) -> str | None:
    """One line when the command line names an extractor config that cannot extract."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "extractor":
            known = known_extractors()
            if value not in known:
                return (
                    f"unknown extractor {value!r}; known: {', '.join(known)} (conf/extractor/), "
                    "or extractor=timm / extractor=open_clip with extractor.arch=NAME"
                )
    return None


@hydra.main(config_path=CONFIG_DIR, config_name="extract", version_base="1.3")
def _main(cfg: DictConfig) -> dict | None:
    from clusterbench.extract.run import extract  # heavy imports after Hydra parsed the command

    quiet_libraries()
    return run_command(
        lambda: extract(cfg, Path(HydraConfig.get().runtime.output_dir), Console()),
        writable="store / hydra.run.dir",
    )


def main() -> None:
    problem = extractor_problem(sys.argv[1:])
    if problem:
        fail(problem)
    _main()


if __name__ == "__main__":
    main()
