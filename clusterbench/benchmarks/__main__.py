"""`python -m clusterbench benchmarks dataset=NAME [overrides]`: build a benchmark, describe it.

Uses the same conf/ as `python -m clusterbench`. Prints a readable summary, then (last line)
the same summary as one-line JSON, also written to `benchmark.json` in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from clusterbench.core.cli import command
from clusterbench.data.spaces import build_view


def describe_benchmark(cfg: DictConfig, run_dir: Path, console: object = None) -> dict:
    """Build the configured benchmark view and describe it (printed, and benchmark.json)."""
    from clusterbench.benchmarks.summary import describe, render
    from clusterbench.core.atomic import write_json_atomic

    info = describe(build_view(cfg.dataset))
    out = run_dir / "benchmark.json"
    write_json_atomic(out, info)
    print(render(info))
    print(f"written          {out}")
    print(json.dumps(info), flush=True)
    return info


main = command(
    "benchmarks", "clusterbench.benchmarks.__main__:describe_benchmark", config_name="config"
)

if __name__ == "__main__":
    main()
