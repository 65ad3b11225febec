"""`python -m clusterbench extract` used carelessly or with hostile input, through the CLI.

Only what extraction made is ever deleted or replaced (work directory, store); a resumed run
redoes the shards whose images changed; link loops and line breaks in names do not corrupt the
listing; a bad weights file or a mistyped setting is one line; two runs into one store never
interleave (lock). Offline: a random-weight timm test_vit on a few generated images.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clusterbench.producers.extract.workdir import WorkDir
from tests.helpers.cli import cli
from tests.helpers.stores import write_store

pytestmark = pytest.mark.slow  # every test runs the command in a subprocess

MODULE = "clusterbench.producers.extract"
MODEL = [
    "extractor=timm",
    "extractor.arch=test_vit",
    "extractor.pretrained=false",
    "extractor.img_size=32",
    "images.workers=0",
    "images.batch_size=2",
    "shard_size=2",
]


def make_images(root: Path, seed: int = 0, train: int = 4, val: int = 2) -> Path:
    """<root>/{train,val}/{a,b}/<i>.png: small random RGB images."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images")


def extract(tmp_path: Path, images: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(
        *MODEL, f"images.root={images}", f"store={store}", *extra, module=MODULE, cwd=tmp_path
    )


def one_error(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one `error: ...` line (no traceback); returns it."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- 1, 2: only what extraction made is deleted -------------------------------------------------
def test_work_dir_holding_other_files_is_never_deleted(tmp_path: Path, images: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "sub" / "data.csv").write_text("1,2\n")
    before = tree_files(mine)
    line = one_error(extract(tmp_path, images, tmp_path / "store", f"work_dir={mine}"))
    assert f"work_dir={mine}" in line and "did not make" in line
    assert tree_files(mine) == before and not (tmp_path / "store").exists()
    line = one_error(
        extract(tmp_path, images, tmp_path / "store", f"work_dir={mine}", "overwrite=true")
    )
    assert tree_files(mine) == before

    # A work directory the tool made, where someone left a file: cleaning up after assembly
    # removes the tool's files only.
    work = tmp_path / "work"
    killed = extract(
        tmp_path, images, tmp_path / "store", f"work_dir={work}", "stop_after_shards=1"
    )
    assert killed.returncode == -9, killed.stderr
    (work / "notes.txt").write_text("keep me")
    done = extract(tmp_path, images, tmp_path / "store", f"work_dir={work}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "store" / "meta.json").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_overwrite_only_replaces_a_store_extract_made(tmp_path: Path, images: Path) -> None:
    store = tmp_path / "photos"
    store.mkdir()
    (store / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    line = one_error(extract(tmp_path, images, store, "overwrite=true"))
    assert "is not a feature store that clusterbench extract made" in line
    assert "overwrite=true to replace" not in line
    assert tree_files(store) == {"holiday.jpg": b"\xff\xd8 not really"}

    # A feature store some other writer made (no made_by) is not extraction's to replace.
    other = write_store(
        tmp_path / "synthetic",
        *(np.zeros((2, 4), np.float32), np.zeros(2, np.int64)) * 2,
        classes=["x"],
    )
    (other / "meta.json").write_text(json.dumps({"made_by": "clusterbench.data.digits"}))
    before = tree_files(other)
    one_error(extract(tmp_path, images, other, "overwrite=true"))
    assert tree_files(other) == before

    ours = tmp_path / "ours"
    assert extract(tmp_path, images, ours).returncode == 0
    meta = json.loads((ours / "meta.json").read_text())
    assert meta["made_by"] == "clusterbench.producers.extract"
    again = extract(tmp_path, images, ours, "overwrite=true", "seed=1")
    assert again.returncode == 0, again.stderr
    assert json.loads((ours / "meta.json").read_text())["plan_digest"] != meta["plan_digest"]
    (ours / "probe_accuracy").mkdir()  # written into the store since, by someone else
    (ours / "probe_accuracy" / "mine.npy").write_bytes(b"results")
    line = one_error(extract(tmp_path, images, ours, "overwrite=true", "seed=2"))
    assert "holds files it never writes (probe_accuracy)" in line
    assert (ours / "probe_accuracy" / "mine.npy").read_bytes() == b"results"


# --- 3, 4: hand-offs -------------------------------------------------------------------------
def test_resume_redoes_shards_whose_images_changed(tmp_path: Path, images: Path) -> None:
    store = tmp_path / "store"
    killed = extract(tmp_path, images, store, "stop_after_shards=2")
    assert killed.returncode == -9, killed.stderr  # train rows 0-3 (a/0..a/3) are done
    rng = np.random.default_rng(7)
    for name in ("0.png", "1.png"):  # the first shard's images are replaced since
        file = images / "train" / "a" / name
        old = file.stat().st_mtime_ns
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(file)
        os.utime(file, ns=(old + 5 * 10**9, old + 5 * 10**9))
    resumed = extract(tmp_path, images, store)
    assert resumed.returncode == 0, resumed.stderr
    assert "redoing 1 finished shard" in resumed.stderr
    fresh = extract(tmp_path, images, tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    for name in ("train.npy", "val.npy", "train_files.txt", "train_labels.npy"):
        assert (store / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    plan_note = json.loads((store / "meta.json").read_text())
    assert plan_note["made_by"] == "clusterbench.producers.extract"


def test_directory_links_are_followed_once(tmp_path: Path, images: Path) -> None:
    (images / "train" / "a" / "loop").symlink_to(images / "train" / "a")  # a loop
    (images / "train" / "b" / "up").symlink_to(images / "train")  # the split folder
    extra = make_images(tmp_path / "extra", seed=3, train=1, val=0) / "train" / "a"
    (images / "train" / "b" / "extra").symlink_to(extra)  # followed: 1 more image of b
    (images / "train" / "b" / "extra_again").symlink_to(extra)  # the same folder again
    store = tmp_path / "store"
    proc = extract(tmp_path, images, store)
    assert proc.returncode == 0, proc.stderr
    assert "3 directory links lead to a folder already listed" in proc.stderr
    files = (store / "train_files.txt").read_text().splitlines()
    assert len(files) == 9 and len(set(files)) == 9
    assert "train/b/extra/0.png" in files
    assert np.load(store / "train.npy").shape[0] == 9
    assert (store / "classes.txt").read_text() == "a\nb\n"


@pytest.mark.parametrize("where", ["class folder", "file"])
def test_line_breaks_in_names_are_refused(tmp_path: Path, images: Path, where: str) -> None:
    if where == "class folder":
        bad = images / "train" / "b\nc"
        make_images(tmp_path / "more", train=1, val=0)
        (tmp_path / "more" / "train" / "a").rename(bad)
    else:
        bad = images / "train" / "a" / "x\ry.png"
        Image.new("RGB", (8, 8)).save(bad, format="PNG")
    line = one_error(extract(tmp_path, images, tmp_path / "store"))
    assert repr(str(bad)) in line and "line break" in line
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


# --- 5, 6: one line, not a traceback ---------------------------------------------------------
def test_bad_open_clip_weights_fail_in_one_line(tmp_path: Path, images: Path) -> None:
    tiny = (
        "extractor.model_kwargs={embed_dim:16,"
        "vision_cfg:{image_size:32,layers:1,width:32,patch_size:16,head_width:16},"
        "text_cfg:{context_length:8,vocab_size:64,width:16,heads:2,layers:1}}"
    )
    text = tmp_path / "weights.txt"
    text.write_text("these are not weights\n" * 10)
    cut = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, cut)
    cut.write_bytes(cut.read_bytes()[:200])  # a zip archive cut short
    for file in (text, cut):
        proc = cli(
            "extractor=open_clip",
            "extractor.arch=ViT-S-32",
            tiny,
            f"extractor.weights={file}",
            f"images.root={images}",
            f"store={tmp_path / 'store'}",
            module=MODULE,
            cwd=tmp_path,
        )
        line = one_error(proc)
        assert str(file) in line and "expected an open_clip checkpoint" in line, line


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("seed=abc", "error: seed='abc' (str): expected int"),
        ("shard_size=abc", "error: shard_size='abc' (str): expected int"),
        ("images.workers=two", "error: images.workers='two' (str): expected int or auto"),
    ],
)
def test_setting_types_are_checked(tmp_path: Path, images: Path, arg: str, expected: str) -> None:
    assert one_error(extract(tmp_path, images, tmp_path / "store", arg)) == expected
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


# --- 7: one extraction at a time -------------------------------------------------------------
def test_a_held_lock_refuses_a_second_extraction(tmp_path: Path, images: Path) -> None:
    store = tmp_path / "store"
    work = WorkDir(store.parent / "store.partial")
    lock = work.claim("another extraction")  # what a running extraction's rank 0 holds
    try:
        line = one_error(extract(tmp_path, images, store))
    finally:
        lock.release()
        work.tidy()
    assert "in use by another extraction" in line
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in line
    assert not store.exists() and not work.path.exists()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path: Path, images: Path) -> None:
    store = tmp_path / "store"
    killed = extract(tmp_path, images, store, "stop_after_shards=1")
    assert killed.returncode == -9, killed.stderr
    holder = json.loads((tmp_path / "store.partial" / "lock").read_text())
    proc = extract(tmp_path, images, store)
    assert proc.returncode == 0, proc.stderr
    assert "note: took over the lock" in proc.stderr and f"pid {holder['pid']}" in proc.stderr
    assert (store / "meta.json").is_file() and not (tmp_path / "store.partial").exists()


def test_two_extractions_at_once_leave_one_store(tmp_path: Path, images: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "CLUSTERBENCH_PROGRESS": "0", "HYDRA_FULL_ERROR": "0"}
    args = [sys.executable, "-m", MODULE, *MODEL, f"images.root={images}", f"store={store}"]
    runs = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    results = [(run.returncode, err) for run, err in zip(runs, errors, strict=True)]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(loser) == 1 and (
        "in use by another extraction" in loser[0] or "already holds a complete" in loser[0]
    ), loser
    assert (store / "meta.json").is_file() and not (tmp_path / "store.partial").exists()
    assert not [p for p in tmp_path.iterdir() if p.name not in ("images", "outputs", "store")]
