"""Checkpoint key maps: published checkpoints whose names differ from timm's, loaded into timm.

A family names how a checkpoint file is laid out; `map_state_dict` turns it into timm's
VisionTransformer names, and `load_into` loads the result strictly, raising one line that lists
what is missing or unexpected (so a wrong family or architecture is obvious, never silent).

    timm         a timm state dict (optionally under `state_dict` / `model`, DDP `module.`)
    dino         DINO full checkpoints (`teacher` / `student` dicts, `module.` / `backbone.`
                 prefixes, projection `head.*`) or bare backbone weights
    ibot         iBOT checkpoints: as dino, plus the masked-image token `masked_embed`
    mae_refined  MIM-Refiner (MAE-Refined) `state_dict`: kappamodules names (`cls_tokens.tokens`,
                 a 2-D sin-cos `pos_embed.embed`) onto a timm ViT built with no_embed_class=True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from clusterbench.core.errors import ExtractionError

KEY_MAPS = ("timm", "dino", "ibot", "mae_refined")
# Nested checkpoints: the sub-dict holding the weights, first found wins (teacher: the EMA
# network DINO and iBOT evaluate).
_NESTED = {
    "timm": ("state_dict", "model"),
    "dino": ("teacher", "state_dict", "model"),
    "ibot": ("teacher", "state_dict", "model"),
    "mae_refined": ("state_dict", "model"),
}
_PREFIXES = ("_orig_mod.", "module.", "backbone.")
_DROP = {
    "timm": (),
    "dino": ("head.",),
    "ibot": ("head.", "masked_embed"),
    "mae_refined": ("head.",),
}
_SHOWN = 6


def read_checkpoint(file: Path) -> dict:
    """A checkpoint file as a dict, loaded with weights_only (no code runs from the file).

    DINO/iBOT checkpoints also store their argparse.Namespace, which is allowed explicitly.
    """
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: report it as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExtractionError(f"cannot read weights file {file}: {first}") from None
    if not isinstance(ckpt, dict):
        raise ExtractionError(
            f"weights file {file} holds a {type(ckpt).__name__}, expected a state dict"
        )
    return ckpt


def map_state_dict(ckpt: dict, family: str) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under timm's names (before the model's own filter)."""
    if family not in KEY_MAPS:
        raise ExtractionError(f"unknown extractor.key_map={family!r}; expected one of {KEY_MAPS}")
    state = ckpt
    for key in _NESTED[family]:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    drop = _DROP[family]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        if drop and key.startswith(drop):
            continue
        out[key] = value
    if family == "mae_refined":
        out = _from_kappamodules(out)
    return out


def _from_kappamodules(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kappamodules' ViT names onto timm's (blocks, norms and patch_embed already agree)."""
    if "cls_tokens.tokens" in state:
        state["cls_token"] = state.pop("cls_tokens.tokens")
    if "pos_embed.embed" in state:
        embed = state.pop("pos_embed.embed")  # (1, H, W, D): patches only, no class position
        state["pos_embed"] = embed.reshape(1, -1, embed.shape[-1])
    return state


def load_into(model: nn.Module, file: Path, family: str, what: str) -> None:
    """Load `file` into a timm `model` through the `family` key map; fail listing mismatches."""
    state = map_state_dict(read_checkpoint(file), family)
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:  # timm's own conversions: pos-embed resampling, DINOv2 layouts
        state = filter_fn(state, model)
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    classifiers = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    state = {  # the model is built without a classifier: a checkpoint's head is not a feature
        k: v
        for k, v in state.items()
        if k in own or not any(k.startswith(f"{c}.") for c in classifiers)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys ({_listing(keys)})")
        if wrong:
            first = wrong[0]
            parts.append(
                f"{len(wrong)} keys of another shape (e.g. {first}: file "
                f"{tuple(state[first].shape)}, model {tuple(own[first].shape)})"
            )
        raise ExtractionError(
            f"weights file {file} does not fit {what} with extractor.key_map={family}: "
            + "; ".join(parts)
            + f"; check extractor.arch and extractor.key_map (one of {', '.join(KEY_MAPS)})"
        )
    model.load_state_dict(state, strict=True)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")
