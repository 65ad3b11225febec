"""What the `zeroshot` and `hzr` commands share: plain config dicts and the opened base store."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

OPEN_BASE_KEYS = (
    "base",
    "path",
    "source",
    "extractor",
    "cache_dir",
    "check_finite",
    "synthetic",
)


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
