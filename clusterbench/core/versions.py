"""The library versions a run records (results.json `versions`, extraction's meta.json)."""

from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = (
    "clusterbench",
    "torch",
    "lightning",
    "faiss-cpu",
    "faiss-gpu",
    "numpy",
    "scipy",
    "scikit-learn",
    "torchmetrics",
    "hydra-core",
    "timm",
    "open_clip_torch",
)


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Python's version and each installed library's (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
