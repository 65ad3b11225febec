"""The scalar keys of conf/extract.yaml (and its `images:`), type-checked before any work.

Hydra passes `seed=abc` or `images.workers=two` through as strings; left alone they fail as a
traceback from `int()` (or deep inside Lightning) after the model is built. `ExtractSettings`
and `ImageSettings` read those keys from the composed config and check them with
`clusterbench.core.config.check_fields` (`key=value (type): expected ...`), then their ranges.
Paths (`store`, `work_dir`, `images.root`, ...) and the extractor spec are checked where used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from clusterbench.core.config import check_fields
from clusterbench.core.errors import ConfigError

DTYPES = ("float16", "float32")


def _read(cls: type, node: DictConfig) -> dict[str, Any]:
    """The dataclass's keys present in `node`, resolved, lists as plain lists."""
    values = {}
    for f in fields(cls):
        if f.name in node:
            value = OmegaConf.select(node, f.name, throw_on_missing=False)
            values[f.name] = (
                OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            )
    return values


@dataclass
class ExtractSettings:
    """Top-level keys of conf/extract.yaml that extraction converts to numbers or flags."""

    overwrite: bool = False
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | int = "auto"  # `precision=32` is read as an int
    shard_size: int = 4096
    dtype: str = "float16"
    max_skipped_fraction: float = 0.01
    download: bool = False
    seed: int = 0
    stop_after_shards: int | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ExtractSettings:
        return cls(**_read(cls, cfg))

    def __post_init__(self) -> None:
        check_fields(self, "")
        if isinstance(self.devices, str) and not re.fullmatch(
            r"auto|-1|\d+|[\d,\s]+", self.devices
        ):
            raise ConfigError(
                f"devices={self.devices!r} (str): expected auto, a number of devices or a list "
                "of device ids"
            )
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes={self.num_nodes}; expected a positive number of nodes")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size={self.shard_size}; expected a positive number of rows")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype}; expected one of {list(DTYPES)}")
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError(
                f"max_skipped_fraction={self.max_skipped_fraction}; expected a value in [0, 1]"
            )
        if self.stop_after_shards is not None and self.stop_after_shards < 1:
            raise ConfigError(
                f"stop_after_shards={self.stop_after_shards}; expected a positive number or null"
            )


@dataclass
class ImageSettings:
    """The numeric keys of `images:` (conf/images/*.yaml)."""

    layout: str = "imagefolder"
    workers: int | str = "auto"
    batch_size: int = 64
    prefetch_factor: int | None = 2

    @classmethod
    def from_config(cls, node: DictConfig) -> ImageSettings:
        return cls(**_read(cls, node))

    def __post_init__(self) -> None:
        check_fields(self, "images")
        if isinstance(self.workers, str) and self.workers != "auto":
            raise ConfigError(f"images.workers={self.workers!r} (str): expected int or auto")
        if isinstance(self.workers, int) and self.workers < 0:
            raise ConfigError(f"images.workers={self.workers}; expected >= 0 or auto")
        if self.batch_size < 1:
            raise ConfigError(f"images.batch_size={self.batch_size}; expected a positive number")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ConfigError(
                f"images.prefetch_factor={self.prefetch_factor}; expected a positive number"
            )
