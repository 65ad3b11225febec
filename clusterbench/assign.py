"""`clusterbench assign RUN_DIR dataset.path=STORE [out=DIR] [splits=train,val]`: the rows of
another store (new images of the same collection, features by the same extractor) assigned to
the clusters a finished run fitted, without fitting again.

The run keeps what prediction needs (`centroids.npy` for k-means, `finch_*.npy` for FINCH,
`task_encoder.pt` for TURTLE, `model.pt` for TEMI and SCANv2: the weights, hyper-parameters
and chosen head; loaded with `weights_only=True`), and its
results.json records the feature dimension and extractor; both are checked against the new
store before any row is read. Output: `<out>/assignments/<split>.parquet` (default out:
`<RUN_DIR>/assigned/<store name>`), the same format as a run's own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clusterbench.core.cli import fail, quiet_libraries, run_command
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows
from clusterbench.data.store import FeatureStore
from clusterbench.evaluation.assignments import write_assignments
from clusterbench.evaluation.predictions import Assigned

USAGE = "usage: clusterbench assign RUN_DIR dataset.path=STORE [out=DIR] [splits=train,val]"


def fitted_method(run_dir: Path, result: dict):
    """The run's fitted method, rebuilt from its saved model file."""
    method = str(result.get("method"))
    artefacts = result.get("artefacts") or {}
    model_file = run_dir / str(artefacts.get("model", ""))
    if not artefacts.get("model") or not model_file.is_file():
        raise ConfigError(
            f"{run_dir} keeps no fitted model ({model_file.name or 'centroids.npy / model.pt'} "
            "is missing); rerun the clustering with this version to assign new rows"
        )
    config = result.get("config") or {}
    if method == "kmeans":
        from clusterbench.methods.kmeans import SphericalKMeans

        kmeans = SphericalKMeans(topk=int((config.get("method") or {}).get("topk", 5)))
        kmeans.centroids = np.load(model_file, allow_pickle=False).astype(np.float32)
        return kmeans, int(kmeans.centroids.shape[0])
    if method == "turtle":
        from clusterbench.methods.turtle.method import SavedTaskEncoder

        topk = int((config.get("method") or {}).get("topk", 5))
        encoder = SavedTaskEncoder(model_file, topk=topk)
        return encoder, encoder.num_clusters
    if method == "finch":
        from clusterbench.methods.finch import FINCH

        finch = FINCH.load(run_dir, topk=int((config.get("method") or {}).get("topk", 5)))
        return finch, finch.clusters
    import torch

    from clusterbench.methods.self_distillation.method import SelfDistillationMethod
    from clusterbench.methods.self_distillation.module import SelfDistillationClustering

    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    model = SelfDistillationClustering(**saved["hyper_parameters"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    method_cfg = {k: v for k, v in (config.get("method") or {}).items() if k != "_target_"}
    wrapper = SelfDistillationMethod.__new__(SelfDistillationMethod)
    wrapper.model = model
    wrapper.topk = int(method_cfg.get("topk", 5))
    wrapper.predict_batch_size = int(method_cfg.get("predict_batch_size", 65536))
    wrapper.device = None
    return wrapper, int(model.num_clusters)


def self_labelled(run_dir: Path, result: dict, method):
    """A run whose refine=self_label was accepted predicts with its classifier, as it did for
    its own rows (`self_label.pt`); the method's model alone would give other clusters."""
    refine = (result.get("method_info") or {}).get("refine") or {}
    if not refine.get("accepted"):
        return method
    from clusterbench.refine.classifier import SelfLabelClassifier
    from clusterbench.refine.self_label import MODEL_FILE, SelfLabelled

    file = run_dir / MODEL_FILE
    if not file.is_file():
        raise ConfigError(
            f"{run_dir} was refined by self-labelling but keeps no {MODEL_FILE}; rerun it to "
            "assign new rows the clusters it reported"
        )
    return SelfLabelled(method, SelfLabelClassifier.load(file), int(getattr(method, "topk", 5)))


def check_compatible(store: FeatureStore, result: dict, run_dir: Path) -> None:
    """The new rows must live in the run's feature space: same dimension, same extractor."""
    summary = result.get("dataset_summary") or {}
    dim = summary.get("dim")
    if dim is not None and int(dim) != store.dim:
        raise ConfigError(
            f"{store.path} has {store.dim}-dimensional features but the run in {run_dir} was "
            f"fitted on {dim} dimensions; assign rows from the same extractor"
        )
    fitted = _extractor(result)
    theirs = store.meta.get("extractor")
    if fitted and theirs and fitted != theirs:
        raise ConfigError(
            f"{store.path} was extracted with {theirs!r} but the run in {run_dir} was fitted "
            f"on {fitted!r} features; assign rows from the same extractor"
        )


def _extractor(result: dict) -> str | None:
    config = result.get("config") or {}
    name = (config.get("extractor") or {}).get("name")
    if name and name != "none":
        return str(name)
    store = summary_store(result)
    if store is not None and (store / "meta.json").is_file():
        meta = json.loads((store / "meta.json").read_text())
        return meta.get("extractor") if isinstance(meta, dict) else None
    return None


def summary_store(result: dict) -> Path | None:
    store = (result.get("dataset_summary") or {}).get("store")
    return Path(store) if store else None


def assign(run_dir: Path, store_path: Path, out: Path | None, splits: list[str]) -> dict:
    """Assign every row of the chosen splits of `store_path`; return what was written."""
    results = run_dir / "results.json"
    if not results.is_file():
        raise ConfigError(f"{run_dir} holds no results.json; expected a finished run directory")
    result = json.loads(results.read_text())
    store = FeatureStore.open(store_path)
    check_compatible(store, result, run_dir)
    method, num_clusters = fitted_method(run_dir, result)
    method = self_labelled(run_dir, result, method)
    out = out or run_dir / "assigned" / store.path.name
    written = {}
    for split in splits:
        rows = FeatureRows(store.split(split).features)
        if len(rows) == 0:
            continue
        chunks: Iterator[Assigned] = method.assign(rows)
        file = out / "assignments" / f"{split}.parquet"
        paths = store.files_path(split)
        names = paths.read_text(encoding="utf-8").splitlines() if paths else None
        w = write_assignments(file, chunks, len(rows), num_clusters, paths=names)
        written[split] = {"file": str(file), "rows": w.rows}
        print(f"{split}: {w.rows:,} rows -> {file}")
    return written


def main(argv: list[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-") or "=" in args[0]:
        fail(f"expected a run directory first; {USAGE}")
    run_dir, settings = Path(args[0]), {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("dataset.path", "out", "splits"):
            fail(f"unknown argument {arg!r}; {USAGE}")
        settings[key] = value
    if "dataset.path" not in settings:
        fail(f"dataset.path=STORE is missing; {USAGE}")
    splits = settings.get("splits", "train,val").split(",")
    if any(s not in ("train", "val") for s in splits):
        fail(f"splits={settings['splits']}: expected train and/or val")
    quiet_libraries()
    out = Path(settings["out"]) if "out" in settings else None
    return run_command(lambda: assign(run_dir, Path(settings["dataset.path"]), out, splits),
                       writable="out")  # fmt: skip


if __name__ == "__main__":
    main()
