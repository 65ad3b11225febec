"""The atlas of a finished run: a static, self-contained site (no CDN, no server).

`index.html`: the run's summary, a map of the clusters (their centres on two principal
components, area = size, each a link) and the table of every cluster, sorted, filtered and
paged in the page (the rows are JSON in the page; 100 per page, so 10,450 clusters stay fast).
`clusters/c<id>.html`: a cluster's statistics, thumbnails of the rows nearest its centre, a
seeded random sample and its least confident rows, and its nearest clusters. Pages are
rendered with Jinja2 (autoescaped) from `templates/`; `static/` is copied beside them.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
from jinja2 import Environment, PackageLoader, select_autoescape
from omegaconf import OmegaConf

from clusterbench.core.atomic import write_json_atomic
from clusterbench.core.errors import ConfigError
from clusterbench.core.progress import progress
from clusterbench.data.view import BenchmarkView
from clusterbench.explore.members import ClusterFacts, cluster_facts
from clusterbench.explore.thumbnails import (
    PLACEHOLDER,
    ThumbnailSettings,
    from_features,
    from_files,
    thumbnail_name,
)

HERE = Path(__file__).parent


@dataclass
class AtlasSettings:
    split: str = "train"
    per_group: int = 8  # rows per section of a cluster page: nearest, random, least confident
    neighbours: int = 6  # nearest clusters listed on a cluster page
    images_root: str | None = None  # default: the root the store's meta.json records
    features_shape: tuple[int, int] | None = None  # draw rows from their features (digits)
    thumbnails: bool = True
    seed: int = 0


def open_run(run_dir: Path) -> tuple[dict, BenchmarkView]:
    """results.json and the run's own view, rebuilt from the config it recorded."""
    from clusterbench.data.spaces import build_view

    results = run_dir / "results.json"
    if not results.is_file():
        raise ConfigError(f"{run_dir} holds no results.json; expected a finished run directory")
    result = json.loads(results.read_text())
    dataset = (result.get("config") or {}).get("dataset")
    if not dataset:
        raise ConfigError(f"{results} records no dataset config; rerun with this version")
    return result, build_view(OmegaConf.create(dataset))


def cluster_names(run_dir: Path, k: int) -> list[str] | None:
    """Names from `naming/names.parquet` (python -m clusterbench.name), when the run has them."""
    file = run_dir / "naming" / "names.parquet"
    if not file.is_file():
        return None
    table = pq.read_table(file, columns=["cluster", "name"]).to_pydict()
    names = [f"cluster {c}" for c in range(k)]
    for c, name in zip(table["cluster"], table["name"], strict=True):
        if 0 <= int(c) < k:
            names[int(c)] = str(name)
    return names


def map_points(facts: ClusterFacts, names: list[str]) -> list[dict]:
    """Non-empty clusters' centres on their first two principal components, in a 1000 box."""
    live = np.flatnonzero(facts.sizes > 0)
    if len(live) == 0:
        return []
    centres = facts.centres[live].astype(np.float64)
    centred = centres - centres.mean(axis=0)
    if len(live) > 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.zeros((len(live), 2))
    span = np.maximum(xy.max(axis=0) - xy.min(axis=0), 1e-12)
    xy = 40 + 920 * (xy - xy.min(axis=0)) / span
    radius = 2 + 18 * np.sqrt(facts.sizes[live] / facts.sizes.max())
    return [
        {"x": f"{x:.1f}", "y": f"{y:.1f}", "r": f"{r:.1f}", "page": page(int(c)),
         "label": f"{names[c]} ({facts.sizes[c]:,} rows)"}
        for c, (x, y), r in zip(live, xy, radius, strict=True)
    ]  # fmt: skip


def page(cluster: int) -> str:
    """A cluster page's path from the site's root."""
    return f"clusters/c{cluster}.html"


def nearest_clusters(facts: ClusterFacts, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's most similar other clusters (cosine of the centres), by faiss."""
    index = faiss.IndexFlatIP(facts.centres.shape[1])
    index.add(np.ascontiguousarray(facts.centres, np.float32))
    width = min(count + 1, len(facts.centres))
    cosine, found = index.search(np.ascontiguousarray(facts.centres, np.float32), width)
    return cosine, found


def build_atlas(run_dir: Path, out: Path, settings: AtlasSettings) -> dict:
    """Write the site for `run_dir` into `out`; return what was made (also `atlas.json`)."""
    start = time.perf_counter()
    result, view = open_run(run_dir)
    assignments = run_dir / "assignments" / f"{settings.split}.parquet"
    if not assignments.is_file():
        raise ConfigError(
            f"{run_dir} has no {assignments.relative_to(run_dir)}; the atlas shows a run's "
            f"assignments (predict.splits must include {settings.split})"
        )
    rows = view.train if settings.split == "train" else view.val
    assigned = pq.ParquetFile(assignments).metadata.num_rows
    if assigned != len(rows):
        raise ConfigError(
            f"{assignments} has {assigned:,} rows but the run's {settings.split} split has "
            f"{len(rows):,}; the store changed since the run"
        )
    labels = view.train_labels if settings.split == "train" else view.val_labels
    k = int((result.get("metrics") or {}).get("num_clusters") or 0) or _clusters_in(assignments)
    facts = cluster_facts(rows, assignments, k, settings.per_group, labels, settings.seed)
    names = cluster_names(run_dir, k) or [f"cluster {c}" for c in range(k)]
    class_names = view.class_names

    def class_name(c: int) -> str:
        return class_names[c] if class_names and 0 <= c < len(class_names) else f"class {c}"

    shown = sorted({r for group in (facts.nearest, facts.sample, facts.least_confident)
                    for rs in group for r in rs})  # fmt: skip
    readable, images = make_thumbnails(shown, view, rows, out, settings)

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HERE / "static", out / "static", dirs_exist_ok=True)
    env = Environment(loader=PackageLoader("clusterbench.explore"), autoescape=select_autoescape())
    cosine, found = nearest_clusters(facts, settings.neighbours)
    title = f"{result.get('method')} on {result.get('dataset')}"
    (out / "clusters").mkdir(exist_ok=True)
    cluster_page = env.get_template("cluster.html")
    for c in progress(range(k), "cluster pages", k):
        write_text(out / page(c), cluster_page.render(
            title=title, name=names[c],
            previous=f"c{c - 1}.html" if c > 0 else None,
            next=f"c{c + 1}.html" if c + 1 < k else None,
            stats=cluster_stats(c, facts, class_name),
            sections=[
                section("Nearest the centre", facts.nearest[c], readable, images),
                section("A random sample", facts.sample[c], readable, images),
                section("Least confident", facts.least_confident[c], readable, images,
                        "the method reports no confidence"),
            ],
            neighbours=[{"page": f"c{int(j)}.html", "name": names[int(j)], "size": int(facts.sizes[j]),
                         "cosine": f"{cos:.3f}"}
                        for j, cos in zip(found[c], cosine[c], strict=True) if j != c and j >= 0],
        ))  # fmt: skip
    columns = index_columns(labels is not None, bool(np.isfinite(facts.mean_confidence).any()))
    data = [index_row(c, facts, names, class_name) for c in range(k)]
    summary = [
        ("method", result.get("method")), ("dataset", result.get("dataset")),
        ("clusters", f"{k:,} ({int((facts.sizes == 0).sum()):,} empty)"),
        ("rows", f"{len(rows):,} ({settings.split})"),
        ("images", images["source"]),
    ] + [(m, f"{100 * v:.2f} %") for m, v in (result.get("metrics") or {}).items()
         if m in ("acc", "nmi", "ari")]  # fmt: skip
    write_text(out / "index.html", env.get_template("index.html").render(
        title=title, subtitle=f"cluster atlas of {run_dir}", summary=summary,
        points=map_points(facts, names), columns=columns, data=data,
    ))  # fmt: skip
    made = {
        "run_dir": str(run_dir), "clusters": k, "rows": len(rows), "split": settings.split,
        "thumbnails": images, "seconds": round(time.perf_counter() - start, 2),
        "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    }  # fmt: skip
    write_json_atomic(out / "atlas.json", made)
    return made


def make_thumbnails(
    shown: list[int], view: BenchmarkView, rows, out: Path, settings: AtlasSettings
) -> tuple[dict[int, bool], dict]:
    thumbs = ThumbnailSettings()
    if not settings.thumbnails or not shown:
        return {}, {"source": "none", "made": 0, "unreadable": 0}
    inferred = pixel_shape(view) if view.files(settings.split) is None else None
    shape = settings.features_shape or inferred
    if shape is not None:
        readable = from_features(shown, rows, tuple(shape), out / "thumbs", thumbs)
        return readable, {"source": "features", "made": len(readable), "unreadable": 0}
    paths = view.files(settings.split)
    if paths is None:
        return {}, {"source": "none (the store lists no image files)", "made": 0, "unreadable": 0}
    root = settings.images_root or (view.store.meta.get("images") or {}).get("root")
    readable = from_files(shown, paths, Path(root) if root else None, out / "thumbs", thumbs)
    bad = sum(1 for ok in readable.values() if not ok)
    return readable, {"source": f"files under {root}", "made": len(readable) - bad,
                      "unreadable": bad}  # fmt: skip


def pixel_shape(view: BenchmarkView) -> tuple[int, int] | None:
    """A store whose features are pixels (meta.json `extractor: pixels`, as the embedded
    digits) is drawn from them: `image_shape` from its meta, else the square of its dim."""
    meta = view.store.meta or {}
    if meta.get("extractor") != "pixels":
        return None
    if meta.get("image_shape"):
        return tuple(int(v) for v in meta["image_shape"])
    side = int(round(view.dim**0.5))
    return (side, side) if side * side == view.dim else None


def section(title: str, rows: list[int], readable: dict[int, bool], images: dict,
            empty: str = "no images for this run") -> dict:  # fmt: skip
    shown = [
        {"row": r, "caption": f"row {r}",
         "src": f"../thumbs/{thumbnail_name(r)}" if readable.get(r) else f"../static/{PLACEHOLDER}"}
        for r in rows
    ] if readable else []  # fmt: skip
    return {"title": title, "images": shown, "empty": empty if rows else "no rows"}


def cluster_stats(c: int, facts: ClusterFacts, class_name) -> list[tuple[str, str]]:
    stats = [("cluster", str(c)), ("size", f"{facts.sizes[c]:,}")]
    if np.isfinite(facts.mean_confidence[c]):
        stats.append(("mean confidence", f"{facts.mean_confidence[c]:.3f}"))
    if facts.majority is not None and facts.majority[c] >= 0:
        stats.append(("majority class", class_name(int(facts.majority[c]))))
        stats.append(("purity", f"{100 * facts.purity[c]:.1f} %"))
        stats.append(("mixes", ", ".join(f"{class_name(cl)} ({n})" for cl, n in facts.mixes[c])))
    return stats


def index_columns(labelled: bool, confidence: bool) -> list[dict]:
    columns = [{"key": "id", "label": "id", "kind": "num"},
               {"key": "name", "label": "name", "kind": "text"},
               {"key": "size", "label": "size", "kind": "num"}]  # fmt: skip
    if confidence:
        columns.append({"key": "confidence", "label": "mean confidence", "kind": "num",
                        "digits": 3})  # fmt: skip
    if labelled:
        columns += [{"key": "majority", "label": "majority class", "kind": "text"},
                    {"key": "purity", "label": "purity (%)", "kind": "num", "digits": 1},
                    {"key": "mixes", "label": "mixes", "kind": "text"}]  # fmt: skip
    return columns


def index_row(c: int, facts: ClusterFacts, names: list[str], class_name) -> dict:
    conf = facts.mean_confidence[c]
    row = {"id": c, "name": names[c], "size": int(facts.sizes[c]), "page": page(c),
           "confidence": round(float(conf), 4) if np.isfinite(conf) else None}  # fmt: skip
    if facts.majority is not None:
        has = facts.majority[c] >= 0
        row["majority"] = class_name(int(facts.majority[c])) if has else None
        row["purity"] = round(100 * float(facts.purity[c]), 2) if has else None
        row["mixes"] = ", ".join(class_name(cl) for cl, _ in facts.mixes[c])
    row["search"] = " ".join(str(v) for v in (c, names[c], row.get("majority") or "")).lower()
    return row


def write_text(file: Path, text: str) -> None:
    partial = file.with_suffix(file.suffix + ".part")
    partial.write_text(text, encoding="utf-8")
    partial.replace(file)


def _clusters_in(assignments: Path) -> int:
    column = pq.read_table(assignments, columns=["cluster"]).column("cluster")
    return int(column.to_numpy().max()) + 1
