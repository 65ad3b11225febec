"""open_clip backbones: `arch`, `pretrained` (null | tag); the feature is `encode_image`.

Preprocessing is open_clip's `create_model_and_transforms` validation transform, with the
pretrained tag's own normalisation, resize mode and activation also when loading a cached file.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from clusterbench.core.errors import ConfigError, ExtractionError
from clusterbench.producers.extract.backbones.backbone import (
    Backbone,
    describe,
    first_line,
    json_ready,
)
from clusterbench.producers.extract.backbones.hub_cache import hf_cached

_OPEN_CLIP_PREPROCESS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


class OpenClipFeatures(nn.Module):
    """open_clip's image embedding in the joint image-text space (`encode_image`, unnormalised)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


def open_clip_backbone(spec: dict, arch: str, weights: Path | None, download: bool) -> Backbone:
    import open_clip

    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        raise ConfigError(
            f"extractor.arch={arch} is not an open_clip model"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    if (spec.get("key_map") or "timm") != "timm":
        raise ConfigError("extractor.key_map applies to timm models; open_clip loads its own files")
    if spec.get("feature") not in (None, "encode_image"):
        raise ConfigError(
            f"extractor.feature={spec['feature']!r}: open_clip models give encode_image only"
        )
    overrides = dict(spec.get("preprocess") or {})
    unknown = set(overrides) - set(_OPEN_CLIP_PREPROCESS)
    if unknown:
        raise ConfigError(
            f"extractor.preprocess: unknown key(s) {sorted(unknown)} for open_clip; expected some "
            f"of {list(_OPEN_CLIP_PREPROCESS)}"
        )
    kwargs: dict = dict(spec.get("model_kwargs") or {})
    if spec.get("img_size"):
        kwargs["force_image_size"] = int(spec["img_size"])
    tag = spec.get("pretrained")
    tag = None if tag in (None, False, "", "false", "none") else str(tag)
    pretrained: str | None = None
    if weights is not None:
        pretrained = str(weights)
    elif tag is not None:
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ConfigError(
                f"open_clip has no pretrained tag {tag!r} for {arch}; known: "
                + (", ".join(tags) if tags else "none")
            )
        # The tag's own preprocessing and activation, also when loading the cached file.
        for key in _OPEN_CLIP_PREPROCESS:
            if key in cfg and key not in overrides:
                overrides[key] = cfg[key]
        kwargs.setdefault("force_quick_gelu", bool(cfg.get("quick_gelu", False)))
        pretrained = _open_clip_cached(cfg)
        if pretrained is None:
            where = _open_clip_source(cfg)
            if not download:
                raise ExtractionError(
                    f"pretrained weights {tag} of open_clip {arch} are not in the local cache "
                    f"(looked for {where}); fetch them where there is internet (download=true, "
                    "or `huggingface-cli download` into the same HF_HOME), or pass "
                    "extractor.weights=FILE"
                )
            pretrained = tag
    for key, target in _OPEN_CLIP_PREPROCESS.items():
        if key in overrides:
            value = overrides[key]
            kwargs[target] = tuple(value) if isinstance(value, list) else value
    file = Path(pretrained) if pretrained and os.path.isfile(pretrained) else None
    if file is not None:
        check_checkpoint(file, arch)
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, **kwargs
        )
    except Exception as exc:  # unpickling a bad file raises KeyError, EOFError, ...
        if file is None and not isinstance(exc, RuntimeError):
            raise
        source = f"weights file {file}" if file is not None else f"pretrained tag {tag}"
        raise ExtractionError(
            f"open_clip {arch} could not load {source} (expected {_EXPECTED}): "
            f"{type(exc).__name__}: {first_line(exc, 400)}"
        ) from None
    dim = getattr(model.visual, "output_dim", None)
    if dim is None:
        size = _open_clip_image_size(model)
        with torch.no_grad():
            dim = model.encode_image(torch.zeros(1, 3, *size)).shape[-1]
    info = {
        "feature": "encode_image",
        "image_size": list(_open_clip_image_size(model)),
        "preprocessing": {
            "preprocess_cfg": json_ready(getattr(model.visual, "preprocess_cfg", {}) or {}),
            "transform": describe(transform),
        },
    }
    return Backbone(OpenClipFeatures(model), transform, int(dim), info, file)


_EXPECTED = "an open_clip checkpoint: a state dict saved by torch.save, or a .safetensors file"


def check_checkpoint(file: Path, arch: str) -> None:
    """Refuse, naming the file, what cannot be a checkpoint by its first bytes (a text file, an
    image, ...): a torch.save zip archive or pickle, a .safetensors header, or numpy .npy/.npz
    (open_clip's big_vision weights)."""
    with open(file, "rb") as fh:
        head = fh.read(16)
    if head.startswith((b"PK\x03\x04", b"\x80", b"\x93NUMPY")):
        return
    if len(head) > 8 and int.from_bytes(head[:8], "little") > 1 and head[8:9] == b"{":
        return  # safetensors: an 8-byte header length, then its JSON header
    raise ExtractionError(
        f"weights file {file} is not a model checkpoint (it starts with {head[:12]!r}); "
        f"open_clip {arch} expected {_EXPECTED}"
    )


def _open_clip_image_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


def _open_clip_cached(cfg: dict) -> str | None:
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    if cfg.get("hf_hub"):
        # 'org/repo/' names the default file, 'org/repo/file.bin' a specific one
        repo, filename = os.path.split(cfg["hf_hub"])
        found = hf_cached(repo, [filename or "open_clip_pytorch_model.bin"])
        if found:
            return found
    if cfg.get("url"):
        file = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(cfg["url"]).path)
        if file.is_file():
            return str(file)
    return None


def _open_clip_source(cfg: dict) -> str:
    if cfg.get("hf_hub"):
        return f"Hugging Face hub {cfg['hf_hub'].rstrip('/')} in the HF cache"
    return f"{cfg.get('url')} in ~/.cache/clip"
