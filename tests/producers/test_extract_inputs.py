"""`clusterbench extract`'s pieces on hand-made inputs: image listing (ImageFolder, file lists)
and decoding, ReaL file lists, the work directory, checkpoint key maps and extractor configs.

The command end to end on an image tree: test_extract.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from PIL import Image

from clusterbench.benchmarks.families.real import real_rows
from clusterbench.core.errors import BenchmarkFileError, ExtractionError
from clusterbench.core.fingerprint import digest
from clusterbench.producers.extract.__main__ import extractor_problem, known_extractors
from clusterbench.producers.extract.backbones.keymaps import load_into
from clusterbench.producers.extract.decode import to_rgb
from clusterbench.producers.extract.images import list_images
from clusterbench.producers.extract.workdir import WorkDir
from tests.helpers.compose import compose_extract


def test_real_rows_reject_unmatched_file_lists(tmp_path: Path) -> None:
    files = tmp_path / "val_files.txt"
    files.write_text("val/a/ILSVRC2012_val_00000002.JPEG\nval/b/photo.jpg\n")
    with pytest.raises(BenchmarkFileError, match="photo.jpg is not an ImageNet validation"):
        real_rows(files, 2, 10)
    with pytest.raises(BenchmarkFileError, match="lists 2 files but the base store has 3"):
        real_rows(files, 3, 10)
    files.write_text("val/a/ILSVRC2012_val_00000012.JPEG\n")
    with pytest.raises(BenchmarkFileError, match="ILSVRC2012_val_00000012 has no entry"):
        real_rows(files, 1, 10)


# --- extractors, listing, decoding, the work dir ---------------------------------------------
def test_unknown_extractor_lists_the_known_ones() -> None:
    problem = extractor_problem(["images.root=x", "extractor=nope"])
    assert problem and "unknown extractor 'nope'" in problem
    known = known_extractors()
    assert {"ibot_vitl", "mae_r_vith", "dinov2_vitg", "clip_vitg", "sup_vitl"} <= set(known)
    assert {"clip_vitb32", "clip_vitl14", "timm", "open_clip"} <= set(known)
    assert "none" not in known and ", ".join(known) in problem
    assert extractor_problem(["extractor=ibot_vitl"]) is None


def test_val_classes_must_be_train_classes(tmp_path: Path) -> None:
    for split, wnid in (("train", "n01"), ("val", "n01"), ("val", "n02"), ("val", "n03")):
        (tmp_path / split / wnid).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / wnid / "a.png")
    with pytest.raises(
        ExtractionError, match="2 val classes have no train images .2 val images.: n02, n03"
    ):
        list_images(tmp_path, "imagefolder", "train", "val")


def test_filelist_layout(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "train.csv").write_text("path,label\n2.png,cat\n0.png,dog\nreadme.md,dog\n")
    (tmp_path / "val.csv").write_text("1.png,dog\n")
    cfg = compose_extract(
        tmp_path, [f"images.root={tmp_path}", "images.layout=filelist", "store=s"]
    )
    listing = list_images(cfg.images.root, cfg.images.layout, cfg.images.train, cfg.images.val)
    assert listing.classes == ["cat", "dog"] and listing.ignored == {"train": 1, "val": 0}
    assert list(listing.splits["train"].files) == ["0.png", "2.png"]
    assert listing.splits["train"].labels.tolist() == [1, 0]
    group = compose_extract(tmp_path, ["images=filelist", f"images.root={tmp_path}", "store=s"])
    assert group.images.layout == "filelist" and group.images.train == "train.csv"


def test_modes_convert_to_8bit_rgb() -> None:
    gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(gray16))[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (10, 20, 30)
    for image in (Image.new("L", (2, 2), 7), Image.new("CMYK", (2, 2)), rgba.quantize(4)):
        assert to_rgb(image).mode == "RGB"


def test_plan_mismatch_is_refused(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w")
    work.prepare({"dtype": "float16", "shard_size": 4})
    with pytest.raises(ExtractionError, match="different extraction .it differs in shard_size"):
        work.check({"dtype": "float16", "shard_size": 8}, overwrite=False)
    work.check({"dtype": "float16", "shard_size": 8}, overwrite=True)


def test_work_dir_left_after_the_final_rename_is_cleaned_up(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "store.partial")
    plan = {"dtype": "float16", "shard_size": 4}
    work.prepare(plan)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "meta.json").write_text(json.dumps({"plan_digest": digest({"x": 1})}))
    work.remove_if_installed(tmp_path / "store")
    assert work.path.exists()  # another plan's shards: kept
    (tmp_path / "store" / "meta.json").write_text(json.dumps({"plan_digest": digest(plan)}))
    work.remove_if_installed(tmp_path / "store")
    assert not work.path.exists()


# --- key maps --------------------------------------------------------------------------------
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["dino", "ibot"])
def test_dino_style_checkpoints_load_into_timm(tmp_path: Path, family: str) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_vit", num_classes=0)
    teacher = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(4, 4)
    if family == "ibot":
        teacher["module.backbone.masked_embed"] = torch.zeros(1, 64)
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    file = tmp_path / "checkpoint.pth"
    torch.save({"teacher": teacher, "student": student, "args": argparse.Namespace(lr=1)}, file)
    target = timm.create_model("test_vit", num_classes=0)
    load_into(target, file, family, "timm test_vit")
    assert _same_weights(source, target)


def test_mae_refined_checkpoints_load_into_timm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_vit", num_classes=0, no_embed_class=True)
    state = dict(source.state_dict())
    state["cls_tokens.tokens"] = state.pop("cls_token")
    pos = state.pop("pos_embed")  # (1, 100, 64): a 10 x 10 grid of patches
    state["pos_embed.embed"] = pos.reshape(1, 10, 10, 64)
    torch.save({"state_dict": state}, tmp_path / "maerefined.th")
    target = timm.create_model("test_vit", num_classes=0, no_embed_class=True)
    load_into(target, tmp_path / "maerefined.th", "mae_refined", "timm test_vit")
    assert _same_weights(source, target)


def test_mismatched_checkpoints_list_their_keys(tmp_path: Path) -> None:
    state = timm.create_model("test_vit", num_classes=0).state_dict()
    state = {k.replace("blocks.", "layers."): v for k, v in state.items()}
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(
        ExtractionError, match=r"missing keys \(blocks\..*unexpected keys \(layers\."
    ):
        load_into(timm.create_model("test_vit", num_classes=0), tmp_path / "w.pth", "timm", "x")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ExtractionError, match="cannot read weights file"):
        load_into(timm.create_model("test_vit", num_classes=0), tmp_path / "junk.pth", "timm", "x")


def test_every_extractor_config_composes_for_extraction(tmp_path: Path) -> None:
    for name in known_extractors():
        cfg = compose_extract(tmp_path, [f"extractor={name}", "images.root=x", "store=y"])
        spec = OmegaConf.to_container(cfg.extractor, resolve=True)
        assert spec["name"] == name and spec["library"] in ("timm", "open_clip")
        assert "dim" in spec and "arch" in spec
