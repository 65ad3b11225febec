"""`clusterbench name RUN_DIR [key=value ...]` (or `run_dir=RUN_DIR`): a unique name for every
cluster of a finished run, voted by its rows in a CLIP text space (conf/name.yaml,
`clusterbench.naming`). Writes `<RUN_DIR>/naming/names.parquet` and `results.json`.
"""

from __future__ import annotations

import sys

from clusterbench.core.cli import command, fail

USAGE = "usage: clusterbench name RUN_DIR [naming.vocabulary=wordnet|classes|FILE] [key=value ...]"


def main(argv: list[str] | None = None) -> object:
    """The run directory may come first, as `assign` takes it, or as `run_dir=RUN_DIR`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and "=" not in args[0]:
        args[0] = f"run_dir={args[0]}"
    if not any(a.startswith("run_dir=") for a in args) and not any(a.startswith("-") for a in args):
        fail(f"expected a run directory first; {USAGE}")
    sys.argv = [sys.argv[0], *args]
    return command("name", "clusterbench.naming.run:run_naming")()


if __name__ == "__main__":
    main()
