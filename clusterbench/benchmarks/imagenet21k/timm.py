"""ImageNet metadata that timm ships (timm/data/_info): the MIIL winter-21 class list and
lemmas behind the tree, the standard ImageNet-1K class order and the ReaL labels. Read as
files, for real stores and the synthetic stand-in alike."""

from __future__ import annotations

import importlib.util
from pathlib import Path

W21_SYNSETS = "imagenet21k_miil_w21_synsets.txt"
LEMMAS = "imagenet_synset_to_lemma.txt"
IN1K_SYNSETS = "imagenet_synsets.txt"
REAL_LABELS = "imagenet_real_labels.json"


def timm_info_file(name: str) -> Path:
    """A file of timm's bundled ImageNet metadata (timm/data/_info), found without importing
    timm (which would import torch: seconds for reading a text file)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"timm is not installed; it ships {name}")
    return Path(spec.origin).parent / "data" / "_info" / name


def in1k_wnids() -> list[str]:
    """The 1000 ImageNet-1K wnids in the standard (sorted) class-index order."""
    return timm_info_file(IN1K_SYNSETS).read_text().split()


def timm_real_labels_path() -> Path:
    """timm's copy of the ReaL labels (Beyer et al. 2020): 50000 lists, val-file order."""
    return timm_info_file(REAL_LABELS)
