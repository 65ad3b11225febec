"""`python -m clusterbench.separability dataset=NAME [overrides]` (conf/separability.yaml)."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from clusterbench.errors import ClusterbenchError


@hydra.main(config_path="../../conf", config_name="separability", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from clusterbench.separability.run import run  # heavy imports after Hydra parsed the line

    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir), Console())
    except (ClusterbenchError, OmegaConfBaseException) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one unwrapped line, as `python -m clusterbench`
        sys.exit(2)
    except PermissionError as exc:  # a read-only cache or output directory
        print(
            f"error: cannot write {exc.filename}: {exc.strerror}; point paths.cache_dir / "
            "hydra.run.dir at a writable directory",
            file=sys.stderr,
        )
        sys.exit(2)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        print(f"error: cannot write {exc.filename}: read-only file system", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
