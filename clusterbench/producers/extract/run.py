"""One extraction: image folder -> model -> shards -> feature store (see `clusterbench.producers.extract`).

Lightning runs the loop: `Trainer.predict` with DataLoader workers decoding, the library's
transform, bf16 autocast and channels-last on GPU, and `ShardWriter` writing shards as
batches finish. Under DDP (several GPUs or nodes) every rank takes its share of the shards not
yet done and writes them itself; rank 0 assembles the store once all ranks are through.
Which rows a rank reads, and in which batches, is `datamodule`'s (`ShardedImages`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from clusterbench.core import progress
from clusterbench.core.device import extraction_precision, lightning_accelerator
from clusterbench.core.errors import ConfigError, ExtractionError
from clusterbench.core.fingerprint import digest
from clusterbench.core.versions import library_versions
from clusterbench.producers.extract.backbones.build import build_backbone
from clusterbench.producers.extract.datamodule import ShardedImages
from clusterbench.producers.extract.images import SPLITS, list_images
from clusterbench.producers.extract.writer import (
    DTYPES,
    ShardWriter,
    WorkDir,
    assemble,
    plan_shards,
    store_is_complete,
)

PLAN_VERSION = 1


class FeatureModule(LightningModule):
    """The backbone as a predict-only LightningModule: (B, 3, H, W) -> (B, D) float32."""

    def __init__(self, network: torch.nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.network, self.channels_last = network, channels_last
        # A rank may have no shard left of a split (few shards, or a resumed run).
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def on_predict_start(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        images = batch["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images).float()


def extract(
    cfg: DictConfig,
    run_dir: Path | None = None,
    console: Console | None = None,
    callbacks: list | None = None,
) -> dict:
    """Run the configured extraction; return {"store", "meta", ...} on rank 0, {} elsewhere."""
    console = console or Console()
    store = Path(_required(cfg, "store", "store=OUT_DIR")).expanduser().resolve()
    overwrite = bool(cfg.get("overwrite", False))
    work = WorkDir(Path(cfg.get("work_dir") or store.parent / f"{store.name}.partial"))
    _check_store(store, overwrite, work)
    dtype = str(cfg.get("dtype", "float16"))
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype}; expected one of {sorted(DTYPES)}")
    shard_size = int(cfg.get("shard_size", 4096))
    if shard_size < 1:
        raise ConfigError(f"shard_size={shard_size}; expected a positive number of rows")
    fraction = float(cfg.get("max_skipped_fraction", 0.01))
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"max_skipped_fraction={fraction}; expected a value in [0, 1]")
    images = cfg.images
    batch_size = int(images.batch_size)
    if batch_size < 1:
        raise ConfigError(f"images.batch_size={batch_size}; expected a positive number")
    accelerator = lightning_accelerator(str(cfg.get("device", "auto")))

    spec = OmegaConf.to_container(cfg.extractor, resolve=True)
    assert isinstance(spec, dict)
    seed = int(cfg.get("seed", 0))
    seed_everything(seed, verbose=False)  # random-weight models: the same weights on every rank
    weights_dir = cfg.get("weights_dir")
    backbone = build_backbone(
        spec, Path(weights_dir) if weights_dir else None, bool(cfg.get("download", False))
    )
    listing = list_images(
        _required(images, "root", "images.root=DIR"),
        str(images.layout),
        _required(images, "train", "images.train=SUBDIR"),
        _required(images, "val", "images.val=SUBDIR"),
    )
    if rank_zero_only.rank == 0:
        for message in listing.warnings:
            print(f"warning: {message}", file=sys.stderr)
    shards = {s: plan_shards(s, len(listing.splits[s]), shard_size) for s in SPLITS}
    plan = {
        "version": PLAN_VERSION,
        "extractor": spec,
        "weights": _file_stamp(backbone.weights_file),
        "images": {
            "root": str(listing.root),
            "layout": listing.layout,
            "digest": listing.digest(),
            "counts": {s: len(listing.splits[s]) for s in SPLITS},
        },
        "dtype": dtype,
        "shard_size": shard_size,
        "seed": seed,
    }
    work.check(plan, overwrite)

    precision = extraction_precision(str(cfg.get("precision", "auto")), accelerator)
    total = sum(len(listing.splits[s]) for s in SPLITS)
    writer = ShardWriter(
        work,
        shards,
        shard_size,
        dtype,
        max_skipped=int(fraction * total),
        files={s: listing.splits[s].files for s in SPLITS},
        stop_after_shards=cfg.get("stop_after_shards"),
    )
    workers = worker_count(images.get("workers", "auto"), accelerator, cfg.get("devices", "auto"))
    datamodule = ShardedImages(
        listing,
        backbone,
        work,
        plan,
        shards,
        batch_size,
        workers,
        images.get("prefetch_factor") or 2,
        pin_memory=accelerator == "gpu",
    )
    show = progress.enabled()
    trainer = Trainer(
        accelerator=accelerator,
        devices=cfg.get("devices", "auto"),
        num_nodes=int(cfg.get("num_nodes", 1)),
        strategy=cfg.get("strategy", "auto"),
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=show,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir) if run_dir else None,
        callbacks=[
            writer,
            *([progress.ExtractionProgressBar(batch_size)] if show else []),
            *(callbacks or []),
        ],
    )
    module = FeatureModule(backbone.module, channels_last=accelerator == "gpu")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
        warnings.filterwarnings("ignore", ".*custom batch sampler `ShardBatches`.*")
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    if trainer.global_rank != 0:
        return {}
    computed = sum(len(s) for split in SPLITS for s in datamodule.assigned[split])
    meta = {
        **backbone.info,
        "weights_sha256": _sha256(backbone.weights_file),
        "images": {
            "root": str(listing.root),
            "layout": listing.layout,
            "train": str(images.train),
            "val": str(images.val),
        },
        "precision": precision,
        "shard_size": shard_size,
        "plan_digest": digest(plan),
        "versions": library_versions(
            ("clusterbench", "torch", "timm", "open_clip_torch", "lightning")
        ),
    }
    meta = assemble(work, listing, shards, dtype, store, meta, fraction, overwrite)
    rate = computed / seconds if computed and seconds > 0 else None
    console.print(
        f"[bold]{store}[/]: train {meta['counts']['train']:,} x {meta['dim']}, val "
        f"{meta['counts']['val']:,} x {meta['dim']} ({dtype}), {meta['num_classes']} classes, "
        f"{meta['skipped']['count']} skipped"
        + (f"; {computed:,} images in {seconds:.1f} s ({rate:,.1f} images/s)" if rate else "")
    )
    return {
        "store": str(store),
        "meta": meta,
        "computed": computed,
        "seconds": seconds,
        "images_per_second": rate,
        "workers": workers,
    }


def _required(node: DictConfig, key: str, example: str):
    if OmegaConf.is_missing(node, key) or node.get(key) in (None, ""):
        raise ConfigError(f"{example} is required (python -m clusterbench extract --help)")
    return node.get(key)


def _check_store(store: Path, overwrite: bool, work: WorkDir) -> None:
    if store.exists() and not store.is_dir():
        raise ExtractionError(f"store={store} exists and is not a directory")
    if overwrite or not store.is_dir():
        return
    if store_is_complete(store):
        work.remove_if_installed(store)  # a kill between installing the store and cleaning up
        raise ExtractionError(
            f"store={store} already holds a complete feature store; pass overwrite=true to "
            "replace it"
        )
    if any(store.iterdir()):
        raise ExtractionError(
            f"store={store} exists and is not empty; choose a new directory or pass "
            "overwrite=true to replace it"
        )


def worker_count(value, accelerator: str, devices) -> int:
    """`images.workers=auto`: the cores of this process's share of the node, less one for the
    main process (at least one, so decoding overlaps the forward)."""
    if str(value) != "auto":
        workers = int(value)
        if workers < 0:
            raise ConfigError(f"images.workers={workers}; expected >= 0 or auto")
        return workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks = 1
    if accelerator == "gpu":
        ranks = torch.cuda.device_count() if str(devices) in ("auto", "-1") else _count(devices)
    return max(1, (cores or 1) // max(1, ranks) - 1)


def _count(devices) -> int:
    if isinstance(devices, int):
        return devices
    text = str(devices)
    return len([d for d in text.strip("[]").split(",") if d.strip()]) if "," in text else int(text)


def _file_stamp(file: Path | None) -> dict | None:
    if file is None:
        return None
    stat = file.stat()
    return {"file": str(file), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _sha256(file: Path | None) -> str | None:
    if file is None:
        return None
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
