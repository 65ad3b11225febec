"""timm backbones: `arch`, `pretrained` (false | true | tag), `feature` (pre_logits | cls).

Preprocessing is timm's `resolve_data_config` + `create_transform` for the pretrained tag
(`extractor.preprocess` overriding single values); a local `weights` file is loaded through a
key map (`keymaps`). Pretrained weights come from the local cache unless `download=true`.
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
from clusterbench.producers.extract.backbones.keymaps import KEY_MAPS, load_into

TIMM_FEATURES = ("pre_logits", "cls")
_TIMM_PREPROCESS = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std")


class TimmFeatures(nn.Module):
    """timm's feature of an image: the model's own pooling (`forward_head(pre_logits=True)`:
    CLS token or average, with the head norm) or the CLS token of `forward_features`."""

    def __init__(self, model: nn.Module, feature: str) -> None:
        super().__init__()
        self.model, self.feature = model, feature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(images)
        if self.feature == "cls":
            return tokens[:, 0]
        return self.model.forward_head(tokens, pre_logits=True)


def _timm_name(arch: str, pretrained) -> str:
    if isinstance(pretrained, str) and pretrained.lower() not in ("true", "false"):
        if "." in arch:
            raise ConfigError(
                f"extractor.arch={arch} already names a pretrained tag; drop the tag or "
                f"extractor.pretrained={pretrained}"
            )
        return f"{arch}.{pretrained}"
    return arch


def _wants_pretrained(pretrained) -> bool:
    if isinstance(pretrained, str):
        return pretrained.lower() != "false"
    return bool(pretrained)


def timm_backbone(spec: dict, arch: str, weights: Path | None, download: bool) -> Backbone:
    import timm
    import timm.data

    pretrained = spec.get("pretrained", False)
    model_name = _timm_name(arch, pretrained)
    base = model_name.split(".", 1)[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        raise ConfigError(
            f"extractor.arch={base} is not a timm model"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=False)
    if "." in model_name and cfg is None:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{base}.*")]
        raise ConfigError(
            f"timm has no pretrained tag {model_name.split('.', 1)[1]!r} for {base}; known: "
            + (", ".join(tags) if tags else "none")
        )
    feature = spec.get("feature", "pre_logits")
    if feature not in TIMM_FEATURES:
        raise ConfigError(f"extractor.feature={feature!r}; expected one of {TIMM_FEATURES}")
    kwargs = {"num_classes": 0, **dict(spec.get("model_kwargs") or {})}
    if spec.get("img_size"):
        kwargs["img_size"] = int(spec["img_size"])
    key_map = spec.get("key_map", "timm") or "timm"
    if key_map not in KEY_MAPS:
        raise ConfigError(f"extractor.key_map={key_map!r}; expected one of {KEY_MAPS}")
    try:
        if weights is not None:
            model = timm.create_model(model_name, pretrained=False, **kwargs)
            load_into(model, weights, key_map, f"timm {model_name}")
        elif _wants_pretrained(pretrained):
            model, cached = _timm_pretrained(model_name, cfg, kwargs, download)
            weights = None if cached is None else Path(cached)
        else:
            model = timm.create_model(model_name, pretrained=False, **kwargs)
    except TypeError as exc:  # a model_kwargs / img_size the architecture does not take
        raise ConfigError(f"timm {model_name} rejects its arguments {kwargs}: {exc}") from None
    if feature == "cls" and getattr(model, "cls_token", None) is None:
        raise ConfigError(f"extractor.feature=cls but timm {model_name} has no CLS token")
    overrides = dict(spec.get("preprocess") or {})
    unknown = set(overrides) - set(_TIMM_PREPROCESS)
    if unknown:
        raise ConfigError(
            f"extractor.preprocess: unknown key(s) {sorted(unknown)} for timm; expected some of "
            f"{list(_TIMM_PREPROCESS)}"
        )
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if spec.get("img_size") and "input_size" not in args:
        args["img_size"] = int(spec["img_size"])
    data_config = timm.data.resolve_data_config(args=args, model=model)
    transform = timm.data.create_transform(**data_config, is_training=False)
    dim = model.num_features if feature == "cls" else _timm_pre_logits_dim(model)
    info = {
        "feature": "cls_token" if feature == "cls" else "forward_head(pre_logits=True)",
        "image_size": list(data_config["input_size"][1:]),
        "preprocessing": {"data_config": json_ready(data_config), "transform": describe(transform)},
        "timm_model": model_name,
    }
    return Backbone(TimmFeatures(model, feature), transform, int(dim), info, weights)


def _timm_pre_logits_dim(model: nn.Module) -> int:
    dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if dim is None:
        raise ConfigError(f"cannot tell the feature size of timm {type(model).__name__}")
    return int(dim)


def _timm_pretrained(
    model_name: str, cfg, kwargs: dict, download: bool
) -> tuple[nn.Module, str | None]:
    """The pretrained model, loaded by timm from the cached file; (model, that file)."""
    import timm

    local = _timm_cached(cfg) if cfg is not None else None
    if local is not None:
        overlay = {"file": local, "custom_load": local.endswith(".npz")}
        model = timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
        return model, local
    where = _timm_source(cfg)
    if not download:
        raise ExtractionError(
            f"pretrained weights of timm {model_name} are not in the local cache (looked for "
            f"{where}); fetch them where there is internet (download=true, or "
            "`huggingface-cli download` into the same HF_HOME), or pass extractor.weights=FILE"
        )
    try:
        model = timm.create_model(model_name, pretrained=True, **kwargs)
        return model, _timm_cached(cfg) if cfg is not None else None
    except Exception as exc:  # network errors come in many types; report one line
        raise ExtractionError(
            f"could not download pretrained weights of timm {model_name} from {where} "
            f"({first_line(exc)}); pass extractor.weights=FILE instead"
        ) from None


def _timm_cached(cfg) -> str | None:
    if cfg.file and os.path.isfile(cfg.file):
        return str(cfg.file)
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["pytorch_model.bin"]
        found = hf_cached(cfg.hf_hub_id, names)
        if found:
            return found
    if cfg.url:
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if file.is_file():
            return str(file)
    return None


def _timm_source(cfg) -> str:
    if cfg is None:
        return "no pretrained source"
    if cfg.hf_hub_id:
        return f"Hugging Face hub {cfg.hf_hub_id} in the HF cache"
    return f"{cfg.url} in {Path(torch.hub.get_dir()) / 'checkpoints'}"
