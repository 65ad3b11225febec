"""Hand-offs between the zero-shot producers and the benchmarks that read their files: what
`hzr` may replace, the class ids an embedding file carries, and the store a relabel directory
was made for."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.core.errors import BenchmarkFileError, ConfigError
from tests.helpers.cli import cli as run_cli
from tests.helpers.compose import compose_hzr
from tests.helpers.synthetic import TINY_IN21K, in21k_like_store


def with_class_ids(file: Path, emb: np.ndarray, wnids) -> Path:
    """`emb` saved as an .npy with its sidecar FILE.npy.classes.txt (row order)."""
    np.save(file, emb)
    Path(f"{file}.classes.txt").write_text("".join(f"{w}\n" for w in wnids))
    return file


def cli(command: str, *args: str, cwd: Path):
    """`python -m clusterbench COMMAND ARGS` with its cache and outputs under `cwd`."""
    return run_cli(command, f"paths.cache_dir={cwd / 'cache'}", *args, cwd=cwd)


def one_error_line(proc) -> str:
    """A refused command: exit status 2 and exactly one `error:` line, returned."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], proc.stderr
    return errors[0]


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- 1. hzr replaces only what it wrote ------------------------------------------------------


@pytest.mark.slow
def test_hzr_out_at_the_feature_store_is_refused_even_with_overwrite(tmp_path):
    store, emb = in21k_like_store(tmp_path / "store")
    wnids = load_tree().class_wnids
    before = listing(store)
    proc = cli(
        "hzr",
        f"dataset.base={store}",
        f"zeroshot.text_embeddings={with_class_ids(tmp_path / 'emb.npy', emb, wnids)}",
        f"hzr.out={store}",
        "hzr.overwrite=true",
        "device=cpu",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert f"hzr.out={store}" in line and "whatever hzr.overwrite says" in line
    assert listing(store) == before  # the store is untouched, no relabel files in it
    assert "next:" not in proc.stdout


def test_hzr_replaces_its_own_relabel_directory_only(tmp_path, single_thread):
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, emb = in21k_like_store(tmp_path / "store")
    file = with_class_ids(tmp_path / "emb.npy", emb, load_tree().class_wnids)
    args = [f"dataset.base={store}", f"zeroshot.text_embeddings={file}", "device=cpu"]

    def hzr(out: Path, *more: str) -> dict:
        cfg = compose_hzr(tmp_path, [*args, f"hzr.out={out}", *more])
        return run_hzr(cfg, tmp_path / "run")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert Path(hzr(empty)["relabel_dir"]) == empty  # an empty directory loses nothing
    with pytest.raises(ConfigError, match="already exists; pass hzr.overwrite=true"):
        hzr(empty)
    hzr(empty, "hzr.overwrite=true")  # its own, same kind: replaced when asked
    with pytest.raises(ConfigError, match="holds a p_hzr relabelling, not leaf_hzr"):
        hzr(empty, "hzr.overwrite=true", "hzr.mode=leaf")
    (empty / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files hzr never writes \(notes.txt\)"):
        hzr(empty, "hzr.overwrite=true")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        hzr(tmp_path / "file", "hzr.overwrite=true")
    # The synthetic store's ideal relabellings are the generator's, not hzr's.
    cfg = compose_hzr(
        tmp_path,
        ["dataset.base=synthetic", *(f"dataset.synthetic.{k}={v}" for k, v in TINY_IN21K.items()),
         f"paths.cache_dir={tmp_path / 'cache'}", f"zeroshot.text_embeddings={file}",
         "hzr.overwrite=true", "device=cpu"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has a meta.json hzr did not write"):
        run_hzr(cfg, tmp_path / "run")
    assert (empty / "notes.txt").read_text() == "mine" and (tmp_path / "file").is_file()


# --- 2. class embedding files carry their class ids ------------------------------------------


@pytest.mark.slow
def test_embeddings_for_another_class_order_are_refused_by_zeroshot_and_hzr(tmp_path):
    store, emb = in21k_like_store(tmp_path / "store")
    wnids = load_tree().class_wnids
    # Rows shifted by one: row i holds class i+1, and the sidecar says so.
    shifted = with_class_ids(tmp_path / "shifted.npy", np.roll(emb, -1, 0), np.roll(wnids, -1))
    common = (f"dataset.base={store}", f"zeroshot.text_embeddings={shifted}", "device=cpu")
    for command in ("zeroshot", "hzr"):
        extra = ("dataset=in21k",) if command == "zeroshot" else (f"hzr.out={tmp_path / 'r'}",)
        proc = cli(command, *extra, *common, cwd=tmp_path)
        line = one_error_line(proc)
        assert str(shifted) in line and "shifted.npy.classes.txt" in line, line
        assert f"row 0 is class {wnids[1]} but the tree's class 0 is {wnids[0]}" in line
    assert not (tmp_path / "r").exists()
    # The same embeddings as an .npz with their wnids: the same refusal.
    npz = tmp_path / "shifted.npz"
    np.savez(npz, vectors=np.roll(emb, -1, 0), wnids=np.roll(np.array(wnids), -1))
    proc = cli(
        "hzr",
        f"dataset.base={store}",
        f"zeroshot.text_embeddings={npz}",
        f"hzr.out={tmp_path / 'r'}",
        "device=cpu",
        cwd=tmp_path,
    )
    assert f"{npz} (wnids): row 0 is class {wnids[1]}" in one_error_line(proc)


@pytest.mark.slow
def test_a_plain_npy_is_used_with_one_warning_and_a_checked_one_without(tmp_path):
    store, emb = in21k_like_store(tmp_path / "store")
    np.save(tmp_path / "plain.npy", emb)
    with_class_ids(tmp_path / "right.npy", emb, load_tree().class_wnids)
    for name, warnings in (("plain.npy", 1), ("right.npy", 0)):
        out = tmp_path / f"rel_{name}"
        proc = cli(
            "hzr",
            f"dataset.base={store}",
            f"zeroshot.text_embeddings={tmp_path / name}",
            f"hzr.out={out}",
            "device=cpu",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        said = proc.stdout + proc.stderr
        assert said.count("carries no class ids") == warnings, said
        assert (f"{tmp_path / name}.classes.txt" in said) == bool(warnings)  # how to add it
        info = json.loads((out / "meta.json").read_text())["class_embeddings"]
        assert info["class_ids"].startswith("unchecked" if warnings else "checked")


def test_embedding_file_checks_in_process(tmp_path, caplog):
    from clusterbench.producers.zeroshot import embeddings

    wnids = load_tree().class_wnids
    emb = np.random.default_rng(0).standard_normal((len(wnids), 4)).astype(np.float32)
    np.save(tmp_path / "plain.npy", emb)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            _, order = embeddings.load_class_embeddings(tmp_path / "plain.npy", wnids)
    assert order.startswith("unchecked")
    assert sum("carries no class ids" in r.getMessage() for r in caplog.records) == 1  # once
    np.savez(tmp_path / "ok.npz", vectors=emb, wnids=np.array(wnids))
    vectors, order = embeddings.load_class_embeddings(tmp_path / "ok.npz", wnids)
    assert order == "checked: ok.npz wnids" and vectors.shape == emb.shape
    cases = {
        "short": (emb[:5], wnids[:5], "covers 5 classes but the tree has 10450"),
        "count": (emb, wnids[:-1], "lists 10449 class ids for 10450 embedding rows"),
    }
    for name, (arr, ids, message) in cases.items():
        file = with_class_ids(tmp_path / f"{name}.npy", arr, ids)
        with pytest.raises(BenchmarkFileError, match=message):
            embeddings.load_class_embeddings(file, wnids)
    np.savez(tmp_path / "novec.npz", wnids=np.array(wnids))
    with pytest.raises(BenchmarkFileError, match="has no vectors array"):
        embeddings.load_class_embeddings(tmp_path / "novec.npz", wnids)


TINY_CLIP = (
    "extractor.model_kwargs={embed_dim:8,vision_cfg:{image_size:32,layers:1,width:64,head_width:32,"
    "patch_size:16},text_cfg:{context_length:77,vocab_size:49408,width:32,heads:2,layers:1}}"
)


def test_the_text_tower_cache_carries_its_class_ids(tmp_path, single_thread, caplog):
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store, _ = in21k_like_store(tmp_path / "store")
    args = [f"dataset.base={store}", "extractor=open_clip", "extractor.arch=ViT-B-32", TINY_CLIP,
            "zeroshot.lemma=first", f"paths.cache_dir={tmp_path / 'cache'}", "device=cpu"]  # fmt: skip
    first = run_hzr(compose_hzr(tmp_path, args), tmp_path / "run")
    (cache,) = (tmp_path / "cache" / "zeroshot_text").glob("*.npz")
    tree = load_tree()
    with np.load(cache) as npz:
        rows, ids, lemmas = npz["vectors"], npz["wnids"].tolist(), npz["lemmas"].tolist()
    assert rows.shape[0] == len(ids) == len(lemmas) == first["class_embeddings"]["num_lemmas"]
    names = dict(zip(tree.class_wnids, tree.class_names, strict=True))
    assert all(lemma in names[w] for w, lemma in zip(ids, lemmas, strict=True))
    again = compose_hzr(tmp_path, [*args, "hzr.overwrite=true"])
    assert run_hzr(again, tmp_path / "r2")["class_embeddings"]["text_from_cache"]
    # A cache whose rows name other classes is never used for these.
    with np.load(cache) as npz:
        arrays = dict(npz)
    arrays["wnids"] = np.roll(arrays["wnids"], 1)
    np.savez(cache, **arrays)
    with caplog.at_level(logging.WARNING):
        third = run_hzr(again, tmp_path / "r3")
    assert not third["class_embeddings"]["text_from_cache"]
    assert any("other classes" in r.getMessage() for r in caplog.records)


# --- 3. a relabel directory names the store it was made for ----------------------------------


@pytest.mark.slow
def test_a_relabelling_made_for_another_store_is_refused(tmp_path, single_thread):
    from clusterbench.producers.zeroshot.hzr import run_hzr

    store_a, emb = in21k_like_store(tmp_path / "a")
    store_b, _ = in21k_like_store(tmp_path / "b", order_seed=1)  # same shape and classes
    file = with_class_ids(tmp_path / "emb.npy", emb, load_tree().class_wnids)
    rel = tmp_path / "rel"
    cfg = compose_hzr(
        tmp_path,
        [f"dataset.base={store_a}", f"zeroshot.text_embeddings={file}", f"hzr.out={rel}",
         "device=cpu"],
    )  # fmt: skip
    made_for = run_hzr(cfg, tmp_path / "run")["store_fingerprint"]
    assert json.loads((rel / "meta.json").read_text())["store_fingerprint"] == made_for

    def describe(store: Path):
        args = ("dataset=p_hzr", f"dataset.base={store}", f"dataset.relabel={rel}")
        return cli("benchmarks", *args, cwd=tmp_path)

    assert describe(store_a).returncode == 0
    line = one_error_line(describe(store_b))
    assert f"relabel directory {rel} was made for the store {store_a}" in line
    assert made_for in line and str(store_b) in line and "rerun hzr" in line


def test_synthetic_relabel_dirs_carry_the_fingerprint_and_old_ones_only_warn(tmp_path, caplog):
    from clusterbench.benchmarks.families.relabel import relabel
    from clusterbench.benchmarks.source import open_base

    kw = {"base": "synthetic", "cache_dir": str(tmp_path / "cache"), "synthetic": TINY_IN21K}
    src = open_base("in21k", "p_hzr", **kw)
    for kind in ("p_hzr", "leaf_hzr"):
        meta = json.loads((src.store.path / "relabel" / kind / "meta.json").read_text())
        assert meta["store_fingerprint"] == src.store.fingerprint and meta["kind"] == kind
    with caplog.at_level(logging.WARNING):
        assert relabel("p_hzr", **kw).num_classes > 0
    assert not caplog.records
    # A store generated before relabel meta.json existed gets it on its next opening.
    for kind in ("p_hzr", "leaf_hzr"):
        (src.store.path / "relabel" / kind / "meta.json").unlink()
    assert open_base("in21k", "p_hzr", **kw).store.fingerprint == src.store.fingerprint
    assert (src.store.path / "relabel" / "p_hzr" / "meta.json").is_file()
    # A hand-made relabelling without a fingerprint: used, with one warning naming the fix.
    hand = tmp_path / "hand"
    hand.mkdir()
    for split in ("train", "val"):
        np.save(hand / f"{split}_labels.npy", np.load(src.store.path / f"{split}_labels.npy"))
    with caplog.at_level(logging.WARNING):
        relabel("leaf_hzr", relabel=str(hand), **kw)
        relabel("leaf_hzr", relabel=str(hand), **kw)
    said = [
        r.getMessage() for r in caplog.records if "records no store fingerprint" in r.getMessage()
    ]
    assert len(said) == 1 and src.store.fingerprint in said[0]
    # A fingerprint of another store: refused.
    (hand / "meta.json").write_text(json.dumps({"store_fingerprint": "0" * 16}))
    with pytest.raises(BenchmarkFileError, match="was made for the store .*fingerprint 0000"):
        relabel("leaf_hzr", relabel=str(hand), **kw)
