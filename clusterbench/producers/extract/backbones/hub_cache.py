"""Pretrained files in the local Hugging Face cache, as timm and open_clip would look them up.

Shared by both libraries' builders: a run finds cached weights here without touching the
network, and downloads only with `download=true`.
"""

from __future__ import annotations

import os


def hub_candidates(filename: str) -> list[str]:
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


def hf_cached(repo: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo.partition("@")
    for name in filenames:
        for candidate in hub_candidates(name):
            path = try_to_load_from_cache(repo, candidate, revision=revision or None)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    return None
