"""`python -m clusterbench hzr extractor=NAME dataset.base=STORE hzr.mode=leaf|parent`.

Hierarchical zero-shot label refining of a whole ImageNet-21K feature store (section 4.2):
the store's GT classes are refined along the tree by zero-shot (`clusterbench.producers.zeroshot.refine`)
and the result is written as the relabel directory the `leaf_hzr` / `p_hzr` benchmarks read
(format: `clusterbench.benchmarks.families.relabel`). Config: conf/hzr.yaml.

Its meta.json records the base store's fingerprint, which the benchmarks check against the
store they apply it to. hzr only ever replaces a relabel directory it wrote itself for the same
kind (meta.json `made_by` and `kind`, nothing but its three files), and only with
hzr.overwrite=true; anything else at hzr.out (the feature store, the synthetic store's ideal
relabellings, any other directory) is refused in one line, whatever hzr.overwrite says.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree
from clusterbench.core.atomic import replace_dir, write_json_atomic
from clusterbench.core.cli import command
from clusterbench.core.config import plain
from clusterbench.core.device import check_device
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.producers.zeroshot.embeddings import check_dims, class_embeddings
from clusterbench.producers.zeroshot.refine import KIND_OF_MODE, MODES, refine
from clusterbench.results import library_versions

# Section 4.2 / Table 2 with OpenCLIP ViT-G on the real ImageNet-21K-P, printed beside ours.
PAPER = {
    "parent": {
        "classes_kept": 10413,
        "classes_dropped": 37,
        "train_excluded": 484,
        "non_leaf_train_refined": 0.42,
    },
    "leaf": {"classes_kept": 8153},
}
SUMMARY_FILE = "hzr_summary.json"
MADE_BY = "clusterbench.producers.zeroshot.hzr"  # meta.json's made_by: what hzr may replace
RELABEL_FILES = ("train_labels.npy", "val_labels.npy", "meta.json")


def relabel_stats(tree: Tree, old: dict, new: dict, steps: dict) -> dict:
    """Counts of meta.json: samples relabelled per depth, classes kept, samples excluded."""
    c = tree.num_classes
    parent = np.asarray(tree.class_parent)
    leaf = np.ones(c, dtype=bool)
    leaf[parent[parent >= 0]] = False
    depth = np.asarray(tree.depth)
    kept = (np.bincount(new["train"], minlength=c) > 0) & (np.bincount(new["val"], minlength=c) > 0)
    stats: dict = {
        "num_classes": c,
        "classes_kept": int(kept.sum()),
        "classes_dropped": int(c - kept.sum()),
    }
    for split in ("train", "val"):
        o, n, s = old[split], new[split], steps[split]
        changed = o != n
        non_leaf = ~leaf[o]
        per_depth = np.bincount(depth[o][changed], minlength=int(depth.max()) + 1)
        stats[split] = {
            "samples": int(o.size),
            "relabelled": int(changed.sum()),
            "non_leaf_samples": int(non_leaf.sum()),
            "non_leaf_refined": float(changed[non_leaf].mean()) if non_leaf.any() else 0.0,
            "relabelled_per_depth": {str(d): int(k) for d, k in enumerate(per_depth) if k},
            "steps_histogram": {str(k): int(v) for k, v in enumerate(np.bincount(s)) if v},
            "excluded": int((~kept[n]).sum()),
        }
    return stats


def foreign(out: Path, kind: str) -> str:
    """Why `out` is not a `kind` relabel directory that hzr wrote ("" when it is one, or an
    empty directory): its meta.json must name hzr and `kind`, and it holds only hzr's files."""
    if out.is_symlink():
        return "is a symbolic link"
    if not out.is_dir():
        return "is not a directory"
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return ""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except FileNotFoundError:
        return f"has no meta.json (it holds {', '.join(entries[:4])})"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "has a meta.json hzr did not write"
    if not isinstance(meta, dict) or meta.get("made_by") != MADE_BY:
        made_by = meta.get("made_by") if isinstance(meta, dict) else None
        return f"has a meta.json hzr did not write (made_by={made_by})"
    if meta.get("kind") != kind:
        return f"holds a {meta.get('kind')} relabelling, not {kind}"
    if other := [e for e in entries if e not in RELABEL_FILES]:
        return f"holds files hzr never writes ({', '.join(other[:4])})"
    return ""


def check_out(out: Path, kind: str, overwrite: bool) -> None:
    """Refuse an output directory hzr may not replace: anything but a `kind` relabel directory
    it wrote itself (the feature store, a generated ideal relabelling, any other directory),
    whatever hzr.overwrite says; its own only with hzr.overwrite=true."""
    if not out.exists() and not out.is_symlink():
        return
    if why := foreign(out, kind):
        raise ConfigError(
            f"hzr.out={out} {why}; hzr only ever replaces a {kind} relabel directory it wrote "
            "itself, whatever hzr.overwrite says: pass hzr.out=DIR for a new directory"
        )
    if any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"relabel directory {out} already exists; pass hzr.overwrite=true to replace it or "
            "hzr.out=DIR to write elsewhere"
        )


def write_relabel_dir(out: Path, labels: dict, meta: dict, overwrite: bool) -> Path:
    """Write train/val labels and meta.json into `out` at once: a fresh directory renamed into
    place, so a reader never sees half a relabelling. Only an empty directory or one hzr wrote
    for the same kind is replaced (`check_out`)."""
    check_out(out, str(meta["kind"]), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for split, arr in labels.items():
            np.save(tmp / f"{split}_labels.npy", arr.astype(np.int64))
        write_json_atomic(tmp / "meta.json", meta)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out, overwrite=True)  # checked above
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def print_summary(stats: dict, mode: str, rate: float, console: Console) -> None:
    paper = PAPER[mode]
    table = Table(title=f"{KIND_OF_MODE[mode]}: ours vs the paper (OpenCLIP ViT-G, real data)")
    table.add_column("")
    table.add_column("ours", justify="right")
    table.add_column("paper", justify="right")
    rows = [
        ("classes kept", stats["classes_kept"], paper.get("classes_kept")),
        ("classes dropped", stats["classes_dropped"], paper.get("classes_dropped")),
        ("train samples excluded", stats["train"]["excluded"], paper.get("train_excluded")),
        (
            "non-leaf train labels refined",
            f"{100 * stats['train']['non_leaf_refined']:.1f} %",
            None
            if "non_leaf_train_refined" not in paper
            else f"{100 * paper['non_leaf_train_refined']:.0f} %",
        ),
        ("train samples relabelled", stats["train"]["relabelled"], None),
        ("samples / s", f"{rate:,.0f}", None),
    ]
    for name, ours, theirs in rows:
        table.add_row(name, str(ours), "" if theirs is None else str(theirs))
    console.print(table)


def run_hzr(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict:
    """Refine the base store's labels and write the relabel directory; return the summary."""
    console = console or Console()
    check_device(cfg)
    mode = str(cfg.hzr.mode)
    if mode not in MODES:
        raise ConfigError(f"hzr.mode={mode!r}: expected one of {MODES}")
    from clusterbench.benchmarks.source import base_arguments, open_base

    tree = load_tree()
    src = open_base("in21k", str(cfg.dataset.get("name", "in21k")), **base_arguments(cfg.dataset))
    labels = dict(zip(("train", "val"), src.labels, strict=True))
    rows = {s: FeatureRows(src.store.split(s).features) for s in ("train", "val")}
    kind = KIND_OF_MODE[mode]
    out = (
        Path(cfg.hzr.out).expanduser() if cfg.hzr.get("out") else src.store.path / "relabel" / kind
    )
    zcfg = plain(cfg.zeroshot)
    if not zcfg.get("text_embeddings"):  # a model without a text tower: say so first
        from clusterbench.producers.zeroshot.text import check_text_tower

        check_text_tower(plain(cfg.extractor), src.store.meta)
    check_out(out, kind, bool(cfg.hzr.overwrite))  # before any work; again when writing
    t0 = time.perf_counter()
    emb = class_embeddings(
        zcfg,
        plain(cfg.extractor),
        src.store.meta,
        tree.class_wnids,
        lemma_data=lambda: (rows["train"], labels["train"]),
        cache_dir=cfg.paths.cache_dir,
        device=str(cfg.device),
        needed=tree.with_descendants(np.unique(np.concatenate(list(labels.values())))),
    )
    text_s = time.perf_counter() - t0
    check_dims(src.store.dim, emb, emb.info.get("source", "text tower"))
    new, steps = {}, {}
    t0 = time.perf_counter()
    for split in ("train", "val"):
        new[split], steps[split] = refine(
            rows[split],
            labels[split],
            emb.vectors,
            tree,
            mode,
            device=str(cfg.device),
            chunk_rows=zcfg.get("chunk_rows"),
        )
    refine_s = time.perf_counter() - t0
    n = sum(len(v) for v in labels.values())
    rate = n / max(refine_s, 1e-9)
    stats = relabel_stats(tree, labels, new, steps)
    meta = {
        "made_by": MADE_BY,
        "kind": kind,
        "mode": mode,
        "base_store": str(src.store.path),
        # What `benchmarks.families.relabel` checks the base store it is applied to against.
        "store_fingerprint": src.store.fingerprint,
        "class_embeddings": {**emb.info, "class_ids": emb.class_ids},
        "tie_rule": "children: lowest class id; p-HZR: the current class wins ties",
        "counts": stats,
        "timings": {"text_s": round(text_s, 3), "refine_s": round(refine_s, 3)},
        "samples_per_s": round(rate, 1),
        "paper": PAPER[mode],
    }
    write_relabel_dir(out, new, meta, bool(cfg.hzr.overwrite))
    summary = {
        **meta,
        "relabel_dir": str(out),
        "versions": library_versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if int(cfg.hzr.get("examples") or 0) > 0:
        from clusterbench.producers.zeroshot.examples import example_grid

        run_dir.mkdir(parents=True, exist_ok=True)
        png, why = example_grid(
            src.store.path,
            src.store.meta,
            tree,
            labels["train"],
            new["train"],
            int(cfg.hzr.examples),
            run_dir / "examples.png",
            int(cfg.hzr.get("seed") or 0),
        )
        summary["examples_png"] = None if png is None else str(png)
        if png is None:
            console.print(f"[yellow]no example grid: {why}[/]")
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    print_summary(stats, mode, rate, console)
    console.print(
        f"relabel directory: {out}\nnext: python -m clusterbench dataset={kind}"
        + ("" if cfg.hzr.get("out") is None else f" dataset.relabel={out}")
        + f" dataset.base={src.store.path if not src.synthetic else 'synthetic'}"
    )
    return summary


main = command(
    "hzr",
    "clusterbench.producers.zeroshot.hzr:run_hzr",
    writable="paths.cache_dir / hydra.run.dir / hzr.out",
)

if __name__ == "__main__":
    main()
