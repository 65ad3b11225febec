"""`clusterbench [COMMAND] [overrides]` (or `python -m clusterbench ...`): every command, one door.

COMMAND defaults to `run`, so `python -m clusterbench method=temi` clusters as it always did.
Each command's module is imported only once it is chosen: `--help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

from clusterbench.core.cli import command, fail

COMMAND_ENV = "CLUSTERBENCH_COMMAND"
# name -> (module with `main()`, what it does). The Hydra ones take `key=value` overrides.
COMMANDS = {
    "run": ("clusterbench.__main__", "cluster a dataset with a method: results.json (default)"),
    "extract": ("clusterbench.producers.extract.__main__", "images -> a feature store"),
    "probe": ("clusterbench.producers.probe.__main__", "linear-probe upper bound, per class"),
    "separability": ("clusterbench.producers.separability.__main__", "class separability"),
    "zeroshot": ("clusterbench.producers.zeroshot.__main__", "CLIP zero-shot classification"),
    "hzr": ("clusterbench.producers.zeroshot.hzr", "hierarchical zero-shot relabelling"),
    "assign": ("clusterbench.assign", "a fitted run's clusters for the rows of another store"),
    "name": ("clusterbench.name", "a unique name for every cluster of a run, from CLIP text"),
    "benchmarks": ("clusterbench.benchmarks.__main__", "build a benchmark view, describe it"),
    "report": ("clusterbench.report.__main__", "a finished sweep -> the paper's tables, figures"),
    "aggregate": ("clusterbench.report.aggregate", "mean ± std over seeds of results.json"),
    "perf": ("clusterbench.perf.__main__", "speed and memory benchmarks (make bench)"),
    "neighbours": ("clusterbench.neighbours_distributed", "mine and cache a kNN table (any ranks)"),
}

run_main = command("run", "clusterbench.run:run", config_name="config")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
    return "usage: clusterbench [COMMAND] [overrides]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> object:
    """Pick the command from the first argument and hand it the rest of the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("help", "commands"):
        print(usage())
        return 0
    # A process Lightning started for another rank is given the arguments after the command
    # (sys.argv[1:] below); the command it belongs to comes through the environment.
    name = os.environ.get(COMMAND_ENV, "run") if "LOCAL_RANK" in os.environ else "run"
    if args and args[0] in COMMANDS:
        name = args.pop(0)
    elif args and not args[0].startswith("-") and "=" not in args[0]:
        fail(
            f"unknown command {args[0]!r}; commands: {', '.join(COMMANDS)} (or key=value overrides)"
        )
    sys.argv = [f"clusterbench {name}", *args]
    os.environ[COMMAND_ENV] = name
    if name == "run":
        return run_main()
    return importlib.import_module(COMMANDS[name][0]).main()


if __name__ == "__main__":
    main()
