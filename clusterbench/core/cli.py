"""What every command shares: one Hydra wrapper, a quiet console, and user errors as one line.

`command(config_name, "module:function")` is the whole entry point of a Hydra command: it parses
the command line against the package's configs, imports the body only then (torch, Lightning
and faiss load after `--help` and bad overrides have been answered), quiets the libraries and
calls `body(cfg, run_dir, console)`. User errors (bad config, bad input files, an unwritable
output directory) print one `error: ...` line, greppable in SLURM job logs, instead of a stack
trace from deep inside a library, and exit with status 2.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from clusterbench.core.config import CONFIG_DIR
from clusterbench.core.errors import ClusterbenchError

T = TypeVar("T")

# faiss logs its CPU-feature probing at import, so the level is set when the entry point
# imports this module, before the command's heavy imports.
logging.getLogger("faiss").setLevel(logging.WARNING)

# Library chatter that says nothing about the run: Lightning's advertisement tips, accelerators
# no user of this project has, its note on counting batches, and a deprecation inside
# Lightning's own pytree helper that a user cannot act on. "GPU available: ..." stays.
NOISE_MESSAGES = (
    "💡 Tip:",
    "TPU available:",
    "HPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
NOISE_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE_MESSAGES)


class ConsoleFormatter(logging.Formatter):
    """The console's log format: the bare message, with the level named from WARNING up.

    Hydra's default prefixes every line with a timestamp and the logger name; the run's log
    file (`<run dir>/*.log`) keeps that full format.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def quiet_libraries() -> None:
    """Print each library log line once, without advertisements or foreign deprecations.

    `lightning` attaches its own console handler at import and lets records propagate, so
    under Hydra (whose handlers sit on the root logger) every Lightning INFO line appeared
    twice. Removing Lightning's handler leaves Hydra's console and log-file handlers. Call it
    after the command's imports: importing Lightning is what installs that handler.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def run_command(fn: Callable[[], T], writable: str = "paths.cache_dir / hydra.run.dir") -> T:
    """Run a command's body; a user error becomes one `error: ...` line and exit status 2.

    `writable` names the settings that point at the directories a command writes, for the
    message when one of them is read-only.
    """
    try:
        return fn()
    except (ClusterbenchError, OmegaConfBaseException) as exc:
        fail(str(exc))
    except PermissionError as exc:  # a read-only cache or output directory
        fail(
            f"cannot write {exc.filename}: {exc.strerror}; point {writable} at a writable directory"
        )
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        fail(f"cannot write {exc.filename}: read-only file system")


def fail(message: str) -> NoReturn:
    """Exit with status 2 after one unwrapped `error: ...` line on stderr."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def command(
    name: str,
    body: str,
    config_name: str | None = None,
    writable: str = "paths.cache_dir / hydra.run.dir",
) -> Callable[[], Any]:
    """The Hydra entry point of command `name`: `body` ("module:function") runs as
    `function(cfg, run_dir, console)` inside `run_command`, with `conf/<config_name>.yaml`
    (default: `<name>.yaml`) as the primary config. The run directory's log is `<name>.log`."""
    import hydra

    def main(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from rich.console import Console

        module, _, name = body.partition(":")
        fn = getattr(importlib.import_module(module), name)  # heavy imports after parsing
        quiet_libraries()
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        return run_command(lambda: fn(cfg, run_dir, Console()), writable)

    main.__module__ = f"clusterbench.{name}"  # Hydra names the job (and its log) after this
    return hydra.main(config_path=CONFIG_DIR, config_name=config_name or name, version_base="1.3")(
        main
    )
