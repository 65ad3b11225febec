"""What the `zeroshot` and `hzr` commands share: one-line errors and the opened base store."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clusterbench.errors import ClusterbenchError

OPEN_BASE_KEYS = (
    "base",
    "path",
    "source",
    "extractor",
    "cache_dir",
    "check_finite",
    "synthetic",
)


def guarded(fn: Callable[[], dict]) -> dict:
    """Run a command, turning user errors into one `error: ...` line and exit status 2,
    as `python -m clusterbench` does."""
    try:
        return fn()
    except (ClusterbenchError, OmegaConfBaseException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except PermissionError as exc:
        print(
            f"error: cannot write {exc.filename}: {exc.strerror}; point paths.cache_dir / "
            "hydra.run.dir / hzr.out at a writable directory",
            file=sys.stderr,
        )
        sys.exit(2)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        print(f"error: cannot write {exc.filename}: read-only file system", file=sys.stderr)
        sys.exit(2)


def plain(node: DictConfig | dict | None) -> dict:
    """A resolved plain dict of a config node (None: empty)."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def base_kwargs(dataset: DictConfig) -> dict:
    """The `open_base` arguments of an ImageNet-21K dataset config."""
    ds = plain(dataset)
    return {k: ds[k] for k in OPEN_BASE_KEYS if k in ds}
