"""Build objects from config with Hydra, reporting our own errors as themselves."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from clusterbench.errors import ClusterbenchError


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Hydra instantiate; a ClusterbenchError raised inside surfaces instead of Hydra's wrapper,
    so the entry point can print it as one line."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ClusterbenchError):
            raise exc.__cause__ from None
        raise
