"""`clusterbench name RUN_DIR`: a name for every cluster of a finished run (conf/name.yaml).

Reads the run's results.json (its dataset config rebuilds the view, so the rows are the ones
clustered) and `assignments/<split>.parquet`; every row of the split votes for its nearest
name in the vocabulary (CLIP image features: the clustered store, or `naming.store`, a
row-aligned store of the same images); each cluster keeps its `naming.candidates` best names
by vote share, and an assignment makes the names unique. Writes, once everything has been
checked and computed:
- `<RUN_DIR>/naming/names.parquet`: `cluster` (int32), `name` (string, unique), `top_names`
  (list<string>, the `naming.top` best names by vote share), `top_shares` (list<float32>,
  their shares of the cluster's rows), `size` (int64, rows of the cluster in the split);
- `<RUN_DIR>/naming/results.json`: settings, timings, counts and the scores against the
  clusters' majority classes (`clusterbench.naming.score`) where the run has labels.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.core.atomic import atomic_file, write_json_atomic
from clusterbench.core.config import plain
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.data.spaces import build_view
from clusterbench.data.store import FeatureStore
from clusterbench.data.view import BenchmarkView
from clusterbench.naming.score import score_names
from clusterbench.naming.unique import DENSE_LIMIT, assign_unique
from clusterbench.naming.vocabulary import build_vocabulary, embed_vocabulary, wnid_node
from clusterbench.naming.votes import PairCounter, majority, nearest_names, top_candidates
from clusterbench.producers.zeroshot.embeddings import check_dims

NAMES_FILE = "names.parquet"
RESULTS_FILE = "results.json"
SCHEMA = pa.schema(
    [
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("top_names", pa.list_(pa.string()), nullable=False),
        pa.field("top_shares", pa.list_(pa.float32()), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
    ]
)


def read_run(run_dir: Path, split: str) -> tuple[dict, Path]:
    """The run's results.json and its assignments file; one line when either is missing."""
    results = run_dir / "results.json"
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is not a directory; expected a finished run")
    if not results.is_file():
        raise ConfigError(f"{run_dir} holds no results.json; expected a finished run directory")
    file = run_dir / "assignments" / f"{split}.parquet"
    if not file.is_file():
        raise ConfigError(
            f"{run_dir} has no assignments/{split}.parquet, which naming reads; rerun the "
            f"clustering with predict.splits including {split} (or set naming.split)"
        )
    try:
        result = json.loads(results.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{results} is not a readable results file ({exc})") from None
    if not isinstance(result, dict) or not isinstance(
        (result.get("config") or {}).get("dataset"), dict
    ):
        raise ConfigError(f"{results} records no dataset config; expected a clustering run's")
    return result, file


def read_clusters(file: Path, rows: int) -> np.ndarray:
    """(N,) int64 cluster of every row of an assignments file, checked against the view."""
    try:
        table = pq.read_table(file, columns=["row", "cluster"])
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{file} is not a readable assignments file ({exc})") from None
    cluster = table.column("cluster").to_numpy().astype(np.int64)
    row = table.column("row").to_numpy()
    if cluster.size != rows or not np.array_equal(row, np.arange(rows)):
        raise ConfigError(
            f"{file} assigns {cluster.size:,} rows but the run's dataset has {rows:,} in that "
            "split; was the store changed after the run?"
        )
    return cluster


def image_rows(
    view: BenchmarkView, split: str, store_path: str | None, cache_dir: str | None = None
) -> tuple[FeatureRows, FeatureStore]:
    """The split's rows in the clustered store, or in `naming.store` once it is checked to be
    row-aligned with it (same rows per split, same image lists where both have them)."""
    index = view.train_index if split == "train" else view.val_index
    if not store_path:
        return view.spaces(split)[0], view.store
    path = Path(store_path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"naming.store={path} is not a feature store directory")
    other = FeatureStore.open(path, cache_dir=cache_dir)
    for name in ("train", "val"):
        mine, theirs = len(view.store.split(name)), len(other.split(name))
        if mine != theirs:
            raise ConfigError(
                f"naming.store={path} has {theirs:,} {name} rows but the clustered store "
                f"{view.store.path} has {mine:,}; it must hold the same images in the same order"
            )
        files = view.store.files_path(name), other.files_path(name)
        if all(files) and files[0].read_bytes() != files[1].read_bytes():
            a, b = (f.read_text(encoding="utf-8").splitlines() for f in files)
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            raise ConfigError(
                f"naming.store={path}: {files[1].name} line {first + 1} differs from the "
                f"clustered store's {files[0]}; it must list the same images in the same order"
            )
    return FeatureRows(other.split(split).features, index), other


def run_extractor(cfg: DictConfig, result: dict) -> dict:
    """The extractor whose text tower embeds the names: `extractor=` if given, else the run's."""
    chosen = plain(cfg.get("extractor"))
    if chosen and chosen.get("name") not in (None, "none"):
        return chosen
    return dict((result.get("config") or {}).get("extractor") or {})


def write_names(path: Path, names: list[str], top: list[list[str]], shares: list[list[float]],
                sizes: np.ndarray) -> None:  # fmt: skip
    table = pa.table(
        {
            "cluster": pa.array(np.arange(len(names), dtype=np.int32)),
            "name": pa.array(names, pa.string()),
            "top_names": pa.array(top, pa.list_(pa.string())),
            "top_shares": pa.array(shares, pa.list_(pa.float32())),
            "size": pa.array(np.asarray(sizes, dtype=np.int64)),
        },
        schema=SCHEMA,
    )
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def cluster_names(
    chosen: np.ndarray, indptr: np.ndarray, items: np.ndarray, vocab_names: tuple[str, ...]
) -> tuple[list[str], np.ndarray]:
    """The unique name of every cluster and the vocabulary entry behind it (-1: none): the
    assigned one, else its best candidate with the cluster id, else `empty #k`."""
    taken = {vocab_names[i] for i in chosen[chosen >= 0]}
    names, behind = [], np.full(chosen.size, -1, dtype=np.int64)
    for k in range(chosen.size):
        if chosen[k] >= 0:
            names.append(vocab_names[chosen[k]])
            behind[k] = chosen[k]
            continue
        if indptr[k + 1] > indptr[k]:
            behind[k] = items[indptr[k]]
            base = f"{vocab_names[behind[k]]} #{k}"
        else:
            base = f"empty #{k}"
        name, extra = base, 1
        while name in taken:
            name, extra = f"{base}.{extra}", extra + 1
        taken.add(name)
        names.append(name)
    return names, behind


def run_naming(
    cfg: DictConfig, hydra_dir: Path | None = None, console: Console | None = None
) -> dict:
    """Name every cluster of `cfg.run_dir`; return the results payload."""
    console = console or Console()
    ncfg = plain(cfg.naming)
    split = str(ncfg.get("split", "train"))
    if split not in ("train", "val"):
        raise ConfigError(f"naming.split={split!r}: expected train or val")
    m, top = int(ncfg.get("candidates", 10)), int(ncfg.get("top", 3))
    if m < 1 or top < 1:
        raise ConfigError(f"naming.candidates={m}, naming.top={top}: both must be >= 1")
    run_dir = Path(str(cfg.run_dir)).expanduser()
    out = Path(str(ncfg.get("out") or run_dir / "naming")).expanduser()
    timings: dict[str, float] = {}
    start = t0 = time.perf_counter()
    result, assignments = read_run(run_dir, split)
    dataset = OmegaConf.create(result["config"]["dataset"])
    view = build_view(dataset)
    rows, store = image_rows(view, split, ncfg.get("store"), str(cfg.paths.cache_dir))
    clusters = read_clusters(assignments, len(rows))
    num_clusters = int((result.get("metrics") or {}).get("num_clusters") or 0)
    num_clusters = max(num_clusters, int(clusters.max(initial=-1)) + 1)
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tree = load_tree()
    vocab = build_vocabulary(str(ncfg.get("vocabulary", "wordnet")), view.class_names, tree)
    zeroshot = plain(cfg.get("zeroshot"))
    vocab, emb = embed_vocabulary(
        vocab, zeroshot, run_extractor(cfg, result), store.meta,
        cfg.paths.cache_dir, str(cfg.device), tree,
    )  # fmt: skip
    check_dims(rows.dim, emb, str(emb.info.get("source", "text tower")))
    timings["text_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    votes = PairCounter(len(vocab))
    for at, best in nearest_names(
        rows, emb.vectors, str(cfg.device), ncfg.get("chunk_rows"), ncfg.get("chunk_names")
    ):
        votes.add(clusters[at : at + best.size], best)
    counts = votes.counts()
    sizes = counts.sizes(num_clusters)
    timings["vote_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    indptr, items, count = top_candidates(counts, num_clusters, max(m, top))
    owner = np.repeat(np.arange(num_clusters), np.diff(indptr))
    shares = count / np.maximum(sizes[owner], 1)
    rank = np.arange(items.size) - indptr[owner]
    keep = rank < m
    kept_ptr = np.zeros(num_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[keep], minlength=num_clusters), out=kept_ptr[1:])
    unique = assign_unique(
        kept_ptr, items[keep], shares[keep], int(ncfg.get("dense_limit") or DENSE_LIMIT)
    )
    names, behind = cluster_names(unique.chosen, indptr, items, vocab.names)
    timings["assign_s"] = time.perf_counter() - t0

    top_names = [
        [vocab.names[i] for i in items[indptr[k] : indptr[k + 1]][:top]]
        for k in range(num_clusters)
    ]
    top_shares = [shares[indptr[k] : indptr[k + 1]][:top].tolist() for k in range(num_clusters)]
    scores = score_run(view, split, clusters, num_clusters, behind, vocab, tree)
    empty = int((sizes == 0).sum())
    payload = {
        "run_dir": str(run_dir),
        "dataset": view.name,
        "split": split,
        "image_features": str(store.path),
        "vocabulary": {
            "setting": str(ncfg.get("vocabulary", "wordnet")),
            "size": len(vocab),
            "text_embeddings": emb.info,
            "class_ids": emb.class_ids,
        },
        "settings": {"candidates": m, "top": top, "device": str(cfg.device)},
        "clusters": {
            "total": num_clusters,
            "named_by_assignment": int((unique.chosen >= 0).sum()),
            "fallback": int(num_clusters - empty - (unique.chosen >= 0).sum()),
            "empty": empty,
            "distinct_top1": int(np.unique(items[indptr[:-1][np.diff(indptr) > 0]]).size),
            "components": unique.components,
            "solved_dense": unique.dense,
            "solved_sparse": unique.sparse,
        },
        "scores": scores,
        "timings": {**timings, "total_s": time.perf_counter() - start},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {"names": NAMES_FILE},
    }
    write_names(out / NAMES_FILE, names, top_names, top_shares, sizes)
    write_json_atomic(out / RESULTS_FILE, payload)
    describe(payload, out, console)
    return payload


def score_run(view: BenchmarkView, split: str, clusters: np.ndarray, num_clusters: int,
              behind: np.ndarray, vocab, tree) -> dict:  # fmt: skip
    """Scores of the names against each cluster's majority class, where the run has labels."""
    labels = view.train_labels if split == "train" else view.val_labels
    if labels is None:
        return {"skipped": "the run's dataset has no labels"}
    if not view.class_names:
        return {"skipped": "the run's dataset names no classes (no classes.txt)"}
    counter = PairCounter(len(view.class_names))
    counter.add(clusters, np.asarray(labels, dtype=np.int64))
    major = majority(counter.counts(), num_clusters)
    scored = np.flatnonzero((major >= 0) & (behind >= 0))
    class_nodes = np.array([wnid_node(c, tree) for c in view.class_names], dtype=np.int64)
    if (class_nodes >= 0).all():
        return score_names(vocab.nodes[behind[scored]], class_nodes[major[scored]], tree)
    return score_names(
        np.empty(0), np.empty(0), None,
        [vocab.names[i] for i in behind[scored]],
        [view.class_names[c] for c in major[scored]],
    )  # fmt: skip


def describe(payload: dict, out: Path, console: Console) -> None:
    c, s = payload["clusters"], payload["scores"]
    console.print(
        f"named {c['total']:,} clusters of {payload['dataset']} ({payload['split']}) from "
        f"{payload['vocabulary']['size']:,} names: {c['named_by_assignment']:,} by the "
        f"assignment, {c['fallback']:,} fallback, {c['empty']:,} empty"
    )
    if "exact" in s:
        line = f"exact {s['exact']:.3f}"
        if "related" in s:
            line += f", ancestor/descendant {s['related']:.3f}, Wu-Palmer {s['wu_palmer']:.3f}"
        console.print(f"scores over {s['clusters_scored']:,} clusters: {line}")
    elif "skipped" in s:
        console.print(f"scores skipped: {s['skipped']}")
    console.print(f"names: {out / NAMES_FILE}")
