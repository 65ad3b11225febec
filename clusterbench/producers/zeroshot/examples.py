"""A PNG grid of relabelled samples with their original and new label (Figures 1, 9-11).

Images are found through the store's `train_files.txt` (paths relative to the image root
that `extract` recorded in meta.json as `images.root`). Features are all the relabelling
needs, so missing or unreadable images only skip the figure, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import Tree


def example_grid(
    store: Path,
    meta: dict,
    tree: Tree,
    old: np.ndarray,
    new: np.ndarray,
    count: int,
    out: Path,
    seed: int = 0,
) -> tuple[Path | None, str]:
    """(the PNG, "") or (None, why there is none) for `count` random relabelled train rows."""
    files = store / "train_files.txt"
    if not files.is_file():
        return None, f"{files} does not exist"
    root = Path(str((meta.get("images") or {}).get("root") or store))
    paths = files.read_text().splitlines()
    moved = np.flatnonzero(old != new)
    if moved.size == 0 or len(paths) != old.size:
        return (
            None,
            "no relabelled sample" if moved.size == 0 else f"{files} does not match the store",
        )
    pick = np.random.default_rng(seed).choice(moved, size=min(count, moved.size), replace=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, UnidentifiedImageError

    images = []
    for i in np.sort(pick):
        try:
            with Image.open(root / paths[int(i)]) as img:
                images.append((int(i), img.convert("RGB").copy()))
        except (OSError, UnidentifiedImageError) as exc:
            return None, f"cannot read {root / paths[int(i)]} ({exc})"
    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (i, img) in zip(axes.flat, images, strict=False):
        ax.imshow(img)
        first = lambda c: tree.names[int(c)].split(",")[0]  # noqa: E731
        ax.set_title(f"{first(old[i])}\n-> {first(new[i])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out, ""
