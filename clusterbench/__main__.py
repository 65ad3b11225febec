"""`python -m clusterbench [overrides]`: the Hydra entry point (config root: conf/)."""

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

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # silence its CPU probing
    from clusterbench.run import run  # heavy imports after Hydra has parsed the command line

    console = Console(stderr=False)
    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir), console)
    except (ClusterbenchError, OmegaConfBaseException) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one unwrapped line, greppable in job logs
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
