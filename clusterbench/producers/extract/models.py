"""Model spec (`conf/extractor/*.yaml`) -> feature network + its library's preprocessing.

    library: timm       arch, pretrained (false | true | tag), feature (pre_logits | cls)
    library: open_clip  arch, pretrained (null | tag); the feature is `encode_image`
    weights: FILE       a local checkpoint instead of a pretrained tag (timm: via key_map)

Preprocessing always comes from the library: timm's `resolve_data_config` + `create_transform`
(the pretrained tag's resize, crop and normalisation, `preprocess` overriding single values),
open_clip's `create_model_and_transforms` (its validation transform). Pretrained weights are
taken from the local Hugging Face / torch hub cache; a run downloads them only with
`download=true`, so a compute node without internet fails at once with what to fetch.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from clusterbench.core.errors import ConfigError, ExtractionError
from clusterbench.producers.extract.keymaps import KEY_MAPS, load_into

LIBRARIES = ("timm", "open_clip")
TIMM_FEATURES = ("pre_logits", "cls")
_TIMM_PREPROCESS = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std")
_OPEN_CLIP_PREPROCESS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


@dataclass
class Backbone:
    """A network mapping preprocessed images (B, 3, H, W) to features (B, dim)."""

    module: nn.Module
    transform: Callable
    dim: int
    info: dict = field(default_factory=dict)
    weights_file: Path | None = None


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


class OpenClipFeatures(nn.Module):
    """open_clip's image embedding in the joint image-text space (`encode_image`, unnormalised)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


def build_backbone(spec: dict, weights_dir: Path | None = None, download: bool = False) -> Backbone:
    """The feature network, transform and meta-data of one extractor spec."""
    name = spec.get("name", "?")
    library = spec.get("library")
    if library not in LIBRARIES:
        raise ConfigError(
            f"extractor={name} has library={library!r}; extraction needs one of {LIBRARIES}"
        )
    arch = spec.get("arch")
    if not arch or arch == "???":
        raise ConfigError(
            f"extractor={name} needs extractor.arch=NAME (a {library} model name, e.g. "
            + ("resnet18" if library == "timm" else "ViT-B-32")
            + ")"
        )
    weights = resolve_weights(spec, weights_dir)
    build = _timm_backbone if library == "timm" else _open_clip_backbone
    backbone = build(spec, str(arch), weights, download)
    backbone.module.eval().requires_grad_(False)
    expected = spec.get("dim")
    if expected is not None and int(expected) != backbone.dim:
        raise ConfigError(
            f"extractor={name} declares dim={expected} but {library} {arch} gives "
            f"{backbone.dim}-dim features; fix extractor.dim or extractor.arch"
        )
    backbone.info = {
        "extractor": name,
        "library": library,
        "architecture": str(arch),
        "pretrained": spec.get("pretrained"),
        "weights": None if backbone.weights_file is None else str(backbone.weights_file),
        "key_map": (spec.get("key_map") or "timm") if weights is not None else None,
        "dim": backbone.dim,
        **backbone.info,
    }
    return backbone


def resolve_weights(spec: dict, weights_dir: Path | None) -> Path | None:
    """`extractor.weights` as an existing file: a path, or a name under `weights_dir`."""
    value = spec.get("weights")
    name = spec.get("name", "?")
    if value in (None, "", False):
        return None
    if value == "???":
        source = spec.get("source")
        raise ExtractionError(
            f"extractor={name} needs a local weights file: pass extractor.weights=FILE "
            f"(a path, or a file name under weights_dir={weights_dir})"
            + (f"; get it from {source}" if source else "")
        )
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if not path.is_absolute() and weights_dir is not None:
        candidates.append(Path(weights_dir).expanduser() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ExtractionError(
        f"extractor.weights={value}: no such file (looked at "
        + " and ".join(str(c) for c in candidates)
        + ")"
    )


# --------------------------------------------------------------------------------------- timm
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


def _timm_backbone(spec: dict, arch: str, weights: Path | None, download: bool) -> Backbone:
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
        "preprocessing": {"data_config": _plain(data_config), "transform": _describe(transform)},
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
            f"({_first_line(exc)}); pass extractor.weights=FILE instead"
        ) from None


def _hub_candidates(filename: str) -> list[str]:
    """A hub file and the safetensors twins the libraries prefer (as timm and open_clip do)."""
    twins = {
        "pytorch_model.bin": ["model.safetensors"],
        "open_clip_pytorch_model.bin": ["open_clip_model.safetensors"],
    }
    if filename in twins:
        return twins[filename] + [filename]
    if filename.endswith(".bin"):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_cached(repo: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo.partition("@")
    for name in filenames:
        for candidate in _hub_candidates(name):
            path = try_to_load_from_cache(repo, candidate, revision=revision or None)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    return None


def _timm_cached(cfg) -> str | None:
    if cfg.file and os.path.isfile(cfg.file):
        return str(cfg.file)
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["pytorch_model.bin"]
        found = _hf_cached(cfg.hf_hub_id, names)
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


# ---------------------------------------------------------------------------------- open_clip
def _open_clip_backbone(spec: dict, arch: str, weights: Path | None, download: bool) -> Backbone:
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
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, **kwargs
        )
    except RuntimeError as exc:
        source = f"weights file {weights}" if weights is not None else f"pretrained tag {tag}"
        raise ExtractionError(
            f"open_clip {arch} could not load {source}: {_first_line(exc, 400)}"
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
            "preprocess_cfg": _plain(getattr(model.visual, "preprocess_cfg", {}) or {}),
            "transform": _describe(transform),
        },
    }
    file = Path(pretrained) if pretrained and os.path.isfile(pretrained) else None
    return Backbone(OpenClipFeatures(model), transform, int(dim), info, file)


def _open_clip_image_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


def _open_clip_cached(cfg: dict) -> str | None:
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    if cfg.get("hf_hub"):
        # 'org/repo/' names the default file, 'org/repo/file.bin' a specific one
        repo, filename = os.path.split(cfg["hf_hub"])
        found = _hf_cached(repo, [filename or "open_clip_pytorch_model.bin"])
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


# ------------------------------------------------------------------------------------ helpers
def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(transform) -> str:
    return " ".join(str(transform).split())


def _plain(value):
    """JSON-ready copy of a config (tuples -> lists, other objects -> str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
