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
from clusterbench.producers.extract.lock import describe
from clusterbench.producers.extract.settings import ExtractSettings, ImageSettings
from clusterbench.producers.extract.workdir import MADE_BY, WorkDir, plan_shards
from clusterbench.producers.extract.writer import (
    ShardWriter,
    assemble,
    store_is_complete,
    store_problem,
)

PLAN_VERSION = 2  # 2: finished shards record their images' (size, mtime_ns)


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
    """Run the configured extraction; return {"store", "meta", ...} on rank 0, {} elsewhere.

    Rank 0 holds the work directory's lock from before any check of the store to after its
    assembly, so two extractions into one store never interleave (`lock`)."""
    console = console or Console()
    settings = ExtractSettings.from_config(cfg)  # type checks before any work
    image_settings = ImageSettings.from_config(cfg.images)
    store = Path(_required(cfg, "store", "store=OUT_DIR")).expanduser().resolve()
    work_dir = cfg.get("work_dir")
    work = WorkDir(
        Path(str(work_dir)).expanduser().resolve()
        if work_dir not in (None, "")
        else store.parent / f"{store.name}.partial"
    )
    if work.path == store or store in work.path.parents:
        raise ConfigError(f"work_dir={work.path} must lie outside store={store}")
    if rank_zero_only.rank != 0:
        work.check_owned()
        _check_store(store, settings.overwrite, work, cleanup=False)
        return _extract(cfg, settings, image_settings, store, work, run_dir, console, callbacks)
    lock = work.claim(f"store={store} (work_dir={work.path})")
    try:
        if lock.previous:
            print(
                f"note: took over the lock {lock.file} of an earlier extraction that ended "
                f"without releasing it ({describe(lock.previous)}; no longer running)",
                file=sys.stderr,
            )
        _check_store(store, settings.overwrite, work, cleanup=True)
        return _extract(cfg, settings, image_settings, store, work, run_dir, console, callbacks)
    finally:
        lock.release()
        work.tidy()


def _extract(
    cfg: DictConfig,
    settings: ExtractSettings,
    image_settings: ImageSettings,
    store: Path,
    work: WorkDir,
    run_dir: Path | None,
    console: Console,
    callbacks: list | None,
) -> dict:
    dtype, shard_size, seed = settings.dtype, settings.shard_size, settings.seed
    fraction = float(settings.max_skipped_fraction)
    images = cfg.images
    batch_size = image_settings.batch_size
    accelerator = lightning_accelerator(str(cfg.get("device", "auto")))

    spec = OmegaConf.to_container(cfg.extractor, resolve=True)
    assert isinstance(spec, dict)
    seed_everything(seed, verbose=False)  # random-weight models: the same weights on every rank
    weights_dir = cfg.get("weights_dir")
    backbone = build_backbone(spec, Path(weights_dir) if weights_dir else None, settings.download)
    listing = list_images(
        _required(images, "root", "images.root=DIR"),
        str(image_settings.layout),
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
            # What identifies an image's content on resume (`images.file_stamp`): finished
            # shards whose images' size or mtime_ns changed since are redone.
            "identity": "size+mtime_ns",
        },
        "dtype": dtype,
        "shard_size": shard_size,
        "seed": seed,
    }
    work.check(plan, settings.overwrite)

    precision = extraction_precision(str(settings.precision), accelerator)
    total = sum(len(listing.splits[s]) for s in SPLITS)
    writer = ShardWriter(
        work,
        shards,
        shard_size,
        dtype,
        max_skipped=int(fraction * total),
        files={s: listing.splits[s].files for s in SPLITS},
        stop_after_shards=settings.stop_after_shards,
    )
    workers = worker_count(image_settings.workers, accelerator, settings.devices)
    datamodule = ShardedImages(
        listing,
        backbone,
        work,
        plan,
        shards,
        batch_size,
        workers,
        image_settings.prefetch_factor or 2,
        pin_memory=accelerator == "gpu",
    )
    show = progress.enabled()
    trainer = Trainer(
        accelerator=accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
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
        "made_by": MADE_BY,
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
    meta = assemble(work, listing, shards, dtype, store, meta, fraction, settings.overwrite)
    rate = computed / seconds if computed and seconds > 0 else None
    console.print(
        f"[bold]{store}[/]: train {meta['counts']['train']:,} x {meta['dim']}, val "
        f"{meta['counts']['val']:,} x {meta['dim']} ({dtype}), "
        + (f"{meta['num_classes']} classes, " if meta["num_classes"] else "unlabelled, ")
        + f"{meta['skipped']['count']} skipped"
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


def _check_store(store: Path, overwrite: bool, work: WorkDir, cleanup: bool) -> None:
    """Refuse a store path extraction may not write: anything but a new or empty directory
    or a store extraction made (`store_problem`), whatever overwrite says; a complete store
    without overwrite. `cleanup` (rank 0, holding the lock): remove a work directory a kill
    left right after the store was installed."""
    if why := store_problem(store):
        raise ExtractionError(f"store={store} {why}")
    if overwrite or not store.is_dir():
        return
    if store_is_complete(store):
        if cleanup:
            work.remove_if_installed(store)  # a kill between installing and cleaning up
        raise ExtractionError(
            f"store={store} already holds a complete feature store; pass overwrite=true to "
            "replace it"
        )
    if any(store.iterdir()):
        raise ExtractionError(
            f"store={store} holds part of a feature store that extraction made; pass "
            "overwrite=true to replace it"
        )


def worker_count(value, accelerator: str, devices) -> int:
    """`images.workers=auto`: the cores of this process's share of the node, less one for the
    main process (at least one, so decoding overlaps the forward)."""
    if str(value) != "auto":
        workers = int(value)  # checked by ImageSettings
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
