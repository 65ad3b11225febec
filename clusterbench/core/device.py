"""Hardware-dependent settings resolved in one place: `device=auto|cpu|cuda` for faiss and
`trainer.precision=auto` for Lightning."""

from __future__ import annotations

from typing import Any

import faiss
from omegaconf import DictConfig

from clusterbench.core.config import build
from clusterbench.core.errors import ConfigError


def faiss_uses_gpu(device: str) -> bool:
    """GPU faiss when asked ("cuda") or when available and device is "auto"."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise ConfigError(
            "device=cuda but this faiss build sees no GPU; install faiss-gpu or use device=cpu"
        )
    return device in ("cuda", "auto") and gpus > 0


def fast_bf16(accelerator: str) -> bool:
    """Whether the accelerator multiplies bf16 matrices natively (and so several times faster).

    CUDA: compute capability 8.0+ (Ampere tensor cores). CPU: AMX tiles or AVX-512-BF16, where
    oneDNN's bf16 GEMM runs 3-6x the fp32 rate; elsewhere bf16 is emulated and no faster.
    """
    import torch

    if accelerator in ("gpu", "cuda"):
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    if accelerator == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(precision: str | int, accelerator: str) -> str:
    """`trainer.precision=auto`: bf16-mixed where the hardware has fast bf16, else 32-true."""
    if str(precision) != "auto":
        return str(precision)
    if accelerator == "auto":
        import torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return "bf16-mixed" if fast_bf16(accelerator) else "32-true"


def build_trainer(node: DictConfig) -> Any:
    """The `trainer` config as a Trainer factory, with `precision: auto` resolved for this machine."""
    node = node.copy()
    if "precision" in node:
        node.precision = resolve_precision(node.precision, str(node.get("accelerator", "auto")))
    return build(node)
