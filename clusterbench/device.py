"""The `device=auto|cpu|cuda` setting, resolved in one place for faiss."""

from __future__ import annotations

import faiss

from clusterbench.errors import ConfigError


def faiss_uses_gpu(device: str) -> bool:
    """GPU faiss when asked ("cuda") or when available and device is "auto"."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise ConfigError(
            "device=cuda but this faiss build sees no GPU; install faiss-gpu or use device=cpu"
        )
    return device in ("cuda", "auto") and gpus > 0
