"""Extraction of a collection without classes: a flat folder (or a file list of paths alone)
becomes an unlabelled store that `clusterbench run` clusters with method.num_clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clusterbench.core.errors import ExtractionError
from clusterbench.data.store import FeatureStore
from clusterbench.producers.extract.images import list_images
from tests.helpers.cli import cli

MODEL = ["extractor=timm", "extractor.arch=test_vit", "extractor.pretrained=false",
         "extractor.img_size=32", "images.workers=0", "images.batch_size=2", "shard_size=2"]  # fmt: skip


def flat_images(root: Path, count: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_a_flat_folder_lists_every_image_without_classes(tmp_path):
    listing = list_images(flat_images(tmp_path / "img"), "flat", "train", "val")
    assert not listing.labelled and len(listing.splits["train"]) == 5
    assert len(listing.splits["val"]) == 0  # no <root>/val: no val split


def test_a_file_list_of_paths_alone_is_unlabelled_and_mixing_is_refused(tmp_path):
    root = flat_images(tmp_path / "img")
    (root / "train.csv").write_text("path\ntrain/0.png\ntrain/sub/1.png\n")
    (root / "val.csv").write_text("train/2.png\n")
    listing = list_images(root, "filelist", "train", "val")
    assert not listing.labelled and len(listing.splits["val"]) == 1
    (root / "val.csv").write_text("train/2.png,cat\n")
    with pytest.raises(ExtractionError, match="some file-list rows have a label and others do"):
        list_images(root, "filelist", "train", "val")


@pytest.mark.slow
def test_extract_then_cluster_an_unlabelled_folder(tmp_path):
    images, store = flat_images(tmp_path / "img"), tmp_path / "store"
    proc = cli(*MODEL, "images.layout=flat", f"images.root={images}", f"store={store}",
               module="clusterbench.producers.extract", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "unlabelled" in proc.stdout
    opened = FeatureStore.open(store)
    assert not opened.labelled and len(opened.train) == 5 and len(opened.val) == 0
    assert not (store / "classes.txt").exists() and not list(store.glob("*_labels.npy"))
    run = cli("dataset=custom", f"dataset.path={store}", "method.num_clusters=2", "logger=none",
              f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    import pandas as pd

    table = pd.read_parquet(tmp_path / "run" / "assignments" / "train.parquet")
    assert table["path"].tolist() == (store / "train_files.txt").read_text().splitlines()
