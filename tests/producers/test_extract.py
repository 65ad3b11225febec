"""`python -m clusterbench extract`: stores equal a plain forward, survive kill -9, feed the
benchmarks (dataset=custom, ReaL by file name); bad input fails with one clear line.

Offline: random-weight tiny models (timm test_vit, a shrunken open_clip ViT) on generated images.
The pieces without an image tree (listing, decoding, the work dir, key maps):
test_extract_inputs.py.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import timm
import timm.data
import torch
from lightning.pytorch import seed_everything
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console

from clusterbench.benchmarks.families.real import in1k_real
from clusterbench.benchmarks.imagenet21k.timm import in1k_wnids
from clusterbench.core.errors import ConfigError, ExtractionError
from clusterbench.data.store import FeatureStore
from clusterbench.producers.extract.decode import load_rgb
from clusterbench.producers.extract.run import extract
from clusterbench.run import run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_extract

WNIDS = in1k_wnids()[:2]  # real ImageNet-1K classes, so the ReaL benchmark can read the store
WNIDS_ID = [0, 1]  # their standard ImageNet-1K class ids
SIZE = 32  # test_vit at 32 px: 4 patches, milliseconds per image
# Val files numbered out of class-folder order: the ReaL alignment must go by name.
VAL_NUMBERS = {WNIDS[0]: (3, 1), WNIDS[1]: (4, 2)}
TINY_CLIP = (
    "extractor.model_kwargs={embed_dim:16,"
    "vision_cfg:{image_size:32,layers:1,width:32,patch_size:16,head_width:16},"
    "text_cfg:{context_length:8,vocab_size:64,width:16,heads:2,layers:1}}"
)


def _image(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    rgb = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.quantize(16)
    return rgb.convert(mode)


def make_tree(root: Path) -> Path:
    """An ImageFolder: 2 classes x 6 train images (JPEG, PNG, GIF; RGB, L, RGBA, P, CMYK,
    16-bit) of several sizes, one truncated JPEG, one text file, one empty class folder."""
    rng = np.random.default_rng(0)
    kinds = [
        ("RGB", "jpg", (40, 30)),
        ("L", "png", (64, 64)),
        ("RGBA", "png", (50, 90)),
        ("P", "gif", (33, 47)),
        ("CMYK", "jpg", (70, 40)),
        ("I;16", "png", (36, 36)),
    ]
    for wnid in WNIDS:
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i, (mode, ext, size) in enumerate(kinds):
            _image(rng, mode, size).save(folder / f"{wnid}_{i}.{ext}")
        val = root / "val" / wnid
        val.mkdir(parents=True)
        for number in VAL_NUMBERS[wnid]:
            _image(rng, "RGB", (48, 40)).save(val / f"ILSVRC2012_val_{number:08d}.JPEG")
    whole = io.BytesIO()
    _image(rng, "RGB", (64, 64)).save(whole, format="JPEG")
    (root / "train" / WNIDS[0] / "truncated.jpg").write_bytes(whole.getvalue()[:300])
    (root / "train" / WNIDS[1] / "notes.txt").write_text("not an image")
    (root / "train" / "n99999999").mkdir()
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random test_vit weights in a file, so a test can rebuild exactly the extracted model."""
    torch.manual_seed(1)
    model = timm.create_model("test_vit", num_classes=0, img_size=SIZE)
    file = tmp_path_factory.mktemp("weights") / "test_vit.pth"
    torch.save(model.state_dict(), file)
    return file


def timm_args(tree: Path, weights: Path, store: Path, *extra: str, workers: int = 0) -> list[str]:
    return [
        "extractor=timm",
        "extractor.arch=test_vit",
        "extractor.pretrained=false",
        f"extractor.weights={weights}",
        f"extractor.img_size={SIZE}",
        f"images.root={tree}",
        f"store={store}",
        "shard_size=4",
        "images.batch_size=3",
        f"images.workers={workers}",
        "max_skipped_fraction=0.1",
        *extra,
    ]


@pytest.fixture(scope="module")
def timm_store(tmp_path_factory, tree: Path, weights: Path) -> Path:
    tmp = tmp_path_factory.mktemp("timm")
    extract(compose_extract(tmp, timm_args(tree, weights, tmp / "store")))
    return tmp / "store"


def test_store_rows_equal_a_direct_forward(timm_store: Path, tree: Path, weights: Path) -> None:
    store = FeatureStore.open(timm_store)
    meta = json.loads((timm_store / "meta.json").read_text())
    assert store.classes == WNIDS  # the empty class folder is left out
    files = (timm_store / "train_files.txt").read_text().splitlines()
    assert files == sorted(files) and len(files) == 12
    assert [f.split("/")[1] for f in files] == [WNIDS[0]] * 6 + [WNIDS[1]] * 6
    assert store.train.labels.tolist() == [0] * 6 + [1] * 6
    assert meta["skipped"] == {"count": 1, "files": [f"train/{WNIDS[0]}/truncated.jpg"]}
    assert (timm_store / "skipped.txt").read_text().startswith(f"train/{WNIDS[0]}/truncated.jpg\t")
    assert meta["ignored_non_image_files"] == {"train": 1, "val": 0}
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["counts"] == {"train": 12, "val": 4} and meta["dtype"] == "float16"
    assert meta["library"] == "timm" and meta["image_size"] == [SIZE, SIZE]
    assert store.train.features.dtype == np.float16

    model = timm.create_model("test_vit", num_classes=0, img_size=SIZE)
    model.load_state_dict(torch.load(weights))
    model.eval()
    config = timm.data.resolve_data_config(args={"img_size": SIZE}, model=model)
    transform = timm.data.create_transform(**config)
    for split in ("train", "val"):
        names = (timm_store / f"{split}_files.txt").read_text().splitlines()
        batch = torch.stack([transform(load_rgb(tree / n)) for n in names])
        with torch.no_grad():
            expected = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
        got = np.asarray(store.split(split).features, dtype=np.float32)
        np.testing.assert_allclose(got, expected.astype(np.float16), rtol=2e-3, atol=2e-3)


def test_open_clip_store_equals_encode_image(tmp_path: Path, tree: Path) -> None:
    args = [
        "extractor=open_clip",
        "extractor.arch=ViT-S-32",
        TINY_CLIP,
        f"images.root={tree}",
        f"store={tmp_path / 'store'}",
        "images.workers=0",
        "max_skipped_fraction=0.1",
    ]
    result = extract(compose_extract(tmp_path, args))
    assert result["meta"]["feature"] == "encode_image" and result["meta"]["dim"] == 16
    seed_everything(0, verbose=False)  # what the run does before building a random-weight model
    kwargs = OmegaConf.to_container(compose_extract(tmp_path, args).extractor.model_kwargs)
    model, _, transform = open_clip.create_model_and_transforms("ViT-S-32", **kwargs)
    model.eval()
    names = (tmp_path / "store" / "val_files.txt").read_text().splitlines()
    with torch.no_grad():
        expected = model.encode_image(torch.stack([transform(load_rgb(tree / n)) for n in names]))
    got = np.load(tmp_path / "store" / "val.npy").astype(np.float32)
    np.testing.assert_allclose(got, expected.numpy().astype(np.float16), rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_kill_then_rerun_gives_an_identical_store(
    tmp_path: Path, tree: Path, weights: Path, timm_store: Path
) -> None:
    store = tmp_path / "store"
    args = timm_args(tree, weights, store, workers=1)
    killed = cli(
        *args, "stop_after_shards=2", module="clusterbench.producers.extract", cwd=tmp_path
    )
    assert killed.returncode == -9, killed.stderr
    work = tmp_path / "store.partial"
    assert not store.exists() and len(list((work / "shards").glob("*.npy"))) == 2
    with open(next(work.glob("manifest-*.jsonl")), "a") as fh:
        fh.write('{"split": "train", "shard": 2, "sta')  # a kill in the middle of an append
    result = extract(compose_extract(tmp_path, args))
    assert result["computed"] == 17 - 8  # the two finished shards of 4 images were not redone
    assert not work.exists()
    names = sorted(p.name for p in timm_store.iterdir())
    assert names == sorted(p.name for p in store.iterdir())
    for name in names:
        assert (store / name).read_bytes() == (timm_store / name).read_bytes(), name


def test_clusterbench_runs_on_the_extracted_store(tmp_path: Path, timm_store: Path) -> None:
    overrides = ["dataset=custom", f"dataset.path={timm_store}", "logger=none"]
    cfg = compose_extract(tmp_path, [*overrides, f"paths.cache_dir={tmp_path}"], "config")
    result = run(cfg, tmp_path / "run", Console(quiet=True))
    assert json.loads((tmp_path / "run" / "results.json").read_text())["seed"] == 0
    assert result["dataset_summary"]["num_train"] == 12
    assert result["dataset_summary"]["num_classes"] == 2
    # Two clusters matched one-to-one to two classes: at least half the rows are matched.
    assert 0.5 <= result["metrics"]["acc"] <= 1.0


def test_in1k_real_aligns_val_rows_by_file_name(tmp_path: Path, timm_store: Path) -> None:
    # Entry i is image ILSVRC2012_val_{i+1}; image 2 has an empty set and is left out.
    sets = [[WNIDS_ID[0], 5], [], [WNIDS_ID[0]], [WNIDS_ID[1], 7]]
    (tmp_path / "real.json").write_text(json.dumps(sets))
    view = in1k_real(
        real=str(tmp_path / "real.json"), base=str(timm_store), cache_dir=str(tmp_path)
    )
    names = (timm_store / "val_files.txt").read_text().splitlines()
    numbers = [int(n[-13:-5]) for n in names]
    assert numbers == [1, 3, 2, 4]  # sorted paths: class folder first
    assert view.val_index.tolist() == [0, 1, 3]  # rows of images 1, 3 and 4
    got = [
        view.val_label_sets.indices[a:b].tolist()
        for a, b in zip(view.val_label_sets.indptr, view.val_label_sets.indptr[1:], strict=False)
    ]
    assert got == [sets[0], sets[2], sets[3]]


# --- bad input -------------------------------------------------------------------------------
def test_unknown_extractor_fails_in_one_line(tmp_path: Path) -> None:
    proc = cli("extractor=nope", "store=x", module="clusterbench.producers.extract", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown extractor 'nope'; known: clip_vitb32")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_paper_extractors_need_their_weights(tmp_path: Path, tree: Path) -> None:
    base = [f"images.root={tree}", f"store={tmp_path / 's'}"]
    for name in ("ibot_vitl", "mae_r_vith"):
        with pytest.raises(ExtractionError, match=f"extractor={name} needs a local weights file"):
            extract(compose_extract(tmp_path, [f"extractor={name}", *base]))
    with pytest.raises(ExtractionError, match=r"extractor.weights=ibot.pth: no such file \(looked"):
        extract(
            compose_extract(tmp_path, ["extractor=ibot_vitl", "extractor.weights=ibot.pth", *base])
        )


def test_missing_pretrained_weights_say_where_to_put_them(
    tmp_path: Path, tree: Path, monkeypatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    base = [f"images.root={tree}", f"store={tmp_path / 's'}"]
    with pytest.raises(ExtractionError, match="not in the local cache.*extractor.weights=FILE"):
        extract(compose_extract(tmp_path, ["extractor.arch=test_vit", *base]))
    with pytest.raises(ExtractionError, match="openai of open_clip ViT-B-32 are not in the local"):
        extract(compose_extract(tmp_path, ["extractor=clip_vitb32", *base]))
    with pytest.raises(ConfigError, match="needs extractor.arch=NAME"):
        extract(compose_extract(tmp_path, base))
    with pytest.raises(ConfigError, match="not a timm model .did you mean resnet18"):
        extract(compose_extract(tmp_path, ["extractor.arch=resnet181", *base]))


def test_pretrained_weights_load_from_the_local_cache(
    tmp_path: Path, tree: Path, monkeypatch
) -> None:
    import huggingface_hub.constants
    from safetensors.torch import save_file

    torch.manual_seed(2)
    published = timm.create_model("test_vit", pretrained=False)  # with its 1000-class head
    snapshot = tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(published.state_dict(), str(snapshot / "model.safetensors"))
    (tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    store = tmp_path / "store"
    args = ["extractor.arch=test_vit", f"images.root={tree}", f"store={store}"]
    result = extract(
        compose_extract(tmp_path, [*args, "images.workers=0", "max_skipped_fraction=0.1"])
    )
    assert result["meta"]["weights"].endswith("abc123/model.safetensors")
    model = timm.create_model("test_vit", num_classes=0)
    model.load_state_dict({k: v for k, v in published.state_dict().items() if "head" not in k})
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    names = (store / "val_files.txt").read_text().splitlines()
    with torch.no_grad():
        expected = model.eval()(torch.stack([transform(load_rgb(tree / n)) for n in names]))
    got = np.load(store / "val.npy").astype(np.float32)
    np.testing.assert_allclose(got, expected.numpy().astype(np.float16), rtol=2e-3, atol=2e-3)


def test_too_many_unreadable_images_fail_without_a_store(
    tmp_path: Path, tree: Path, weights: Path
) -> None:
    store = tmp_path / "store"
    args = [a for a in timm_args(tree, weights, store) if not a.startswith("max_skipped")]
    with pytest.raises(ExtractionError, match="1 images could not be decoded.*truncated.jpg"):
        extract(compose_extract(tmp_path, args))
    assert not store.exists()


def test_existing_stores_are_refused(tmp_path: Path, timm_store: Path, tree: Path) -> None:
    base = ["extractor.arch=test_vit", f"images.root={tree}"]
    with pytest.raises(ExtractionError, match="already holds a complete feature store.*overwrite"):
        extract(compose_extract(tmp_path, [*base, f"store={timm_store}"]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ExtractionError, match="exists and is not empty"):
        extract(compose_extract(tmp_path, [*base, f"store={tmp_path / 'other'}"]))
