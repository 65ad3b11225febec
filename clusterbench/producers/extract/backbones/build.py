"""Model spec (`conf/extractor/*.yaml`) -> feature network + its library's preprocessing.

    library: timm       arch, pretrained (false | true | tag), feature (pre_logits | cls)
    library: open_clip  arch, pretrained (null | tag); the feature is `encode_image`
    weights: FILE       a local checkpoint instead of a pretrained tag (timm: via key_map)

Preprocessing always comes from the library: timm's `resolve_data_config` + `create_transform`
(the pretrained tag's resize, crop and normalisation, `preprocess` overriding single values),
open_clip's `create_model_and_transforms` (its validation transform). Pretrained weights are
taken from the local Hugging Face / torch hub cache; a run downloads them only with
`download=true`, so a compute node without internet fails at once with what to fetch.

This module checks what every spec needs and dispatches on `library`; each library's
builder lives in its own module (`timm`, `open_clip`).
"""

from __future__ import annotations

from pathlib import Path

from clusterbench.core.errors import ConfigError, ExtractionError
from clusterbench.producers.extract.backbones.backbone import Backbone
from clusterbench.producers.extract.backbones.open_clip import open_clip_backbone
from clusterbench.producers.extract.backbones.timm import timm_backbone

LIBRARIES = ("timm", "open_clip")


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
    build = timm_backbone if library == "timm" else open_clip_backbone
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
