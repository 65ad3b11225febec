"""Hardware-dependent settings resolved in one place: `device=auto|cpu|cuda` for faiss, torch
and Lightning, and the `precision=auto` policies.

Every command validates `device` the same way: `cuda` without CUDA is one error line, never a
failure deep inside torch. `auto` means different precisions for different work, each a named
policy here with its reason: training (`training_precision`), extraction
(`extraction_precision`) and the linear probes (`probe_uses_bf16`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faiss
from omegaconf import DictConfig

from clusterbench.core.config import build
from clusterbench.core.errors import ConfigError

if TYPE_CHECKING:
    import torch


def faiss_uses_gpu(device: str) -> bool:
    """GPU faiss when asked ("cuda") or when available and device is "auto"."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise ConfigError(
            "device=cuda but this faiss build sees no GPU; install faiss-gpu or use device=cpu"
        )
    return device in ("cuda", "auto") and gpus > 0


# Elements of one float32 block a chunked kernel holds at once, per purpose: (CPU, accelerator).
BLOCK_ELEMENTS = {
    "heads": (1 << 22, 1 << 28),  # fused heads' logits: 16 MiB, about a CPU's L3 cache; 1 GiB
    "similarity": (1 << 23, 1 << 28),  # zero-shot rows x candidates: 32 MiB; 1 GiB
    "probe_scores": (1 << 25, 1 << 25),  # P probes x rows x C logits when scoring: 128 MiB
}


def block_elements(purpose: str, accelerator: bool) -> int:
    """The block budget of `purpose` (a key of BLOCK_ELEMENTS) on a CPU or an accelerator."""
    cpu, gpu = BLOCK_ELEMENTS[purpose]
    return gpu if accelerator else cpu


def torch_device(device: str) -> torch.device:
    """The run's `device: auto|cpu|cuda[:i]` as a torch device (auto: CUDA when available)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r}: expected auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device; use device=auto or cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r}: expected auto, cpu or cuda")
    return resolved


def check_device(cfg: Any) -> None:
    """Every command's `device` checked the same way before any work (`cuda` without CUDA is
    one error line, also when a warm cache would let the run get far without it)."""
    torch_device(str(cfg.get("device", "auto")))


def lightning_accelerator(device: str) -> str:
    """`device=auto|cpu|cuda` as a Lightning accelerator name (validated as `torch_device`)."""
    return "gpu" if torch_device(device).type == "cuda" else "cpu"


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


def training_precision(precision: str | int, accelerator: str) -> str:
    """`trainer.precision=auto`: bf16-mixed where the hardware has fast bf16 (GPU or CPU), else
    32-true. Training is GEMM-bound, so a CPU with a bf16 unit gains too."""
    if str(precision) != "auto":
        return str(precision)
    if accelerator == "auto":
        import torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return "bf16-mixed" if fast_bf16(accelerator) else "32-true"


def build_trainer(node: DictConfig) -> Any:
    """The `trainer` config as a Trainer factory, with `precision: auto` resolved for this
    machine; a GPU trainer without CUDA is refused here, before any data is read."""
    import torch

    node = node.copy()
    if str(node.get("accelerator", "auto")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={node.accelerator} but torch sees no CUDA device; use "
            "trainer=cpu (or trainer.accelerator=auto)"
        )
    if "precision" in node:
        node.precision = training_precision(node.precision, str(node.get("accelerator", "auto")))
    return build(node)


def extraction_precision(value: str, accelerator: str) -> str:
    """`precision=auto` of extraction: bf16 autocast on GPUs that support it, else exact fp32
    (so CPU rows are reproducible against a plain forward of the same model)."""
    import torch

    if value != "auto":
        return value
    if accelerator == "gpu" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def probe_uses_bf16(precision: str, device: torch.device) -> bool:
    """bf16 products for the probes: `bf16`, and `auto` on GPUs with bf16 tensor cores (CUDA
    8.0+). Not on CPUs, even with AMX / AVX-512-BF16: the probe's batched products are too
    small to gain (measured: 11.9 vs 10.7 ms per 18-probe step, D=64, C=100, one thread)."""
    return precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and fast_bf16("cuda")
    )
