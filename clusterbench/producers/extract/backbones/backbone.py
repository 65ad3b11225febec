"""What a library's builder returns (`Backbone`), and the helpers that describe it.

Separate from `build` so that the timm and open_clip builders can share the result type and the
JSON-ready description of their preprocessing (and their one-line errors) without importing
the dispatch that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn


@dataclass
class Backbone:
    """A network mapping preprocessed images (B, 3, H, W) to features (B, dim)."""

    module: nn.Module
    transform: Callable
    dim: int
    info: dict = field(default_factory=dict)
    weights_file: Path | None = None


def first_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(transform) -> str:
    return " ".join(str(transform).split())


def json_ready(value):
    """JSON-ready copy of a config (tuples -> lists, other objects -> str)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
