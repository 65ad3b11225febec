"""`python -m clusterbench extract extractor=NAME images.root=DIR store=OUT_DIR [overrides]`.

Same config root as `python -m clusterbench` (conf/), primary config conf/extract.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from clusterbench.core.cli import command, fail
from clusterbench.core.config import CONFIG_DIR


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


_main = command(
    "extract", "clusterbench.producers.extract.run:extract", writable="store / hydra.run.dir"
)


def main() -> None:
    problem = extractor_problem(sys.argv[1:])
    if problem:
        fail(problem)
    _main()


if __name__ == "__main__":
    main()
