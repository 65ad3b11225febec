"""`python -m clusterbench.benchmarks dataset=NAME [overrides]`: build a benchmark, describe it.

Uses the same conf/ as `python -m clusterbench`. Prints a readable summary, then (last line)
the same summary as one-line JSON, also written to `benchmark.json` in the run directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from clusterbench.__main__ import CONFIG_DIR
from clusterbench.errors import ClusterbenchError
from clusterbench.instantiate import build


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from clusterbench.atomic import write_json_atomic
    from clusterbench.benchmarks.summary import describe, render

    try:
        info = describe(build(cfg.dataset))
    except (ClusterbenchError, OmegaConfBaseException) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one unwrapped line, greppable in job logs
        sys.exit(2)
    out = Path(HydraConfig.get().runtime.output_dir) / "benchmark.json"
    write_json_atomic(out, info)
    print(render(info))
    print(f"written          {out}")
    print(json.dumps(info), flush=True)
    return info


if __name__ == "__main__":
    main()
