"""Extraction throughput: the whole pipeline against the bare model forward, in one run.

    python -m clusterbench perf extract [--arch resnet18] [--images 384] [--batch-size 32]
                                        [--workers auto] [--device cpu|cuda] [--quick]

pipeline  `clusterbench.producers.extract.run.extract` on a generated ImageFolder of JPEGs (500 x 375,
          ImageNet's typical size): DataLoader workers decode and transform, Lightning
          predicts, shards are written and the store assembled. Images/s counts the predict
          loop in steady state (the intervals between the ends of consecutive full train
          batches), and also the whole call (worker start-up, assembly).
bare      the same network on the same images, decoded and transformed beforehand into one
          tensor, batch by batch under torch.inference_mode at the same batch size.
decode    load_rgb + the transform in this process, one image at a time: images/s per core,
          to size `images.workers` (workers needed = model images/s / decode images/s).
Rates are the batch size over the median batch time, so a burst of other load on a shared
machine moves neither; rounds interleave bare and pipeline, the best of each is kept and their
ratio reported (mean rates are in the JSON report too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from clusterbench.perf.__main__ import machine_info

SIZE = (500, 375)


class _Clock(Callback):
    """Times the predict loop: the end of every batch, and the images in it."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.sizes: list[int] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if dataloader_idx == 0:  # train: the val loader's worker start-up is not steady state
            self.ends.append(time.perf_counter())
            self.sizes.append(len(batch["index"]))

    def steady_rate(self) -> float | None:
        """Images/s: full batches over their median interval."""
        full = max(self.sizes, default=0)
        gaps = [
            b - a
            for a, b, n in zip(self.ends, self.ends[1:], self.sizes[1:], strict=False)
            if n == full
        ]
        return full / float(np.median(gaps)) if gaps else None

    def mean_rate(self) -> float | None:
        if len(self.ends) < 2:
            return None
        return sum(self.sizes[1:]) / (self.ends[-1] - self.ends[0])


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """`count` photo-like JPEGs (smooth colour fields plus grain) under root/train/<class>/
    and a few under root/val/<class>/; natural-image file sizes, so decoding costs as usual."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    val = max(2, count // 16)
    for i in range(count + val):
        split = "train" if i < count else "val"
        folder = root / split / f"n{i % 4:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize(SIZE, Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:06d}.jpg", quality=90)


def _config(root: Path, store: Path, arch: str, batch_size: int, workers, device: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from clusterbench.core.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="extract",
            overrides=[
                "extractor=timm",
                f"extractor.arch={arch}",
                "extractor.pretrained=false",
                f"images.root={root}",
                f"images.batch_size={batch_size}",
                f"images.workers={workers}",
                f"store={store}",
                f"device={device}",
                "overwrite=true",
                f"paths.root_dir={root.parent}",
            ],
        )
    GlobalHydra.instance().clear()
    return cfg


def bare_rate(
    network: torch.nn.Module, images: torch.Tensor, batch_size: int, device
) -> tuple[float, float]:
    """(median-batch, mean) images/s of the network alone over pre-decoded tensors, full
    batches only, after one warm-up batch."""
    network = network.to(device)
    times = []
    with torch.inference_mode():
        network(images[:batch_size].to(device))
        _sync(device)
        for first in range(0, len(images) - batch_size + 1, batch_size):
            start = time.perf_counter()
            network(images[first : first + batch_size].to(device))
            _sync(device)
            times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times)), batch_size * len(times) / sum(times)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def decode_rate(root: Path, files: list[str], transform, limit: int = 64) -> float:
    """Images/s of load_rgb + transform on one core (this process, one image at a time)."""
    from clusterbench.producers.extract.decode import load_rgb

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chosen = files[:limit]
        start = time.perf_counter()
        for name in chosen:
            transform(load_rgb(root / name))
        return len(chosen) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def run(
    arch: str = "resnet18",
    images: int = 384,
    batch_size: int = 32,
    workers: str = "auto",
    device: str = "cpu",
    rounds: int = 2,
    keep: Path | None = None,
) -> dict:
    """All measurements; returns the JSON-ready report."""
    from clusterbench.producers.extract.backbones.build import build_backbone
    from clusterbench.producers.extract.decode import load_rgb
    from clusterbench.producers.extract.images import list_images
    from clusterbench.producers.extract.run import extract

    os.environ.setdefault("CLUSTERBENCH_PROGRESS", "0")
    load_before = os.getloadavg()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="clusterbench-extract-bench-"))
    try:
        root = work / "images"
        if not root.exists():
            make_images(root, images)
        cfg = _config(root, work / "store", arch, batch_size, workers, device)
        backbone = build_backbone(OmegaConf.to_container(cfg.extractor, resolve=True))
        listing = list_images(root, "imagefolder", "train", "val")
        files = list(listing.splits["train"].files) + list(listing.splits["val"].files)
        decoded = torch.stack([backbone.transform(load_rgb(root / f)) for f in files])
        per_core = decode_rate(root, files, backbone.transform)
        torch_device = torch.device("cuda" if device == "cuda" else "cpu")
        bare, pipeline, whole, used_workers = [], [], [], None
        bare_mean, pipeline_mean = [], []
        for _ in range(rounds):
            median, mean = bare_rate(backbone.module, decoded, batch_size, torch_device)
            bare.append(median)
            bare_mean.append(mean)
            clock = _Clock()
            start = time.perf_counter()
            result = extract(cfg, callbacks=[clock])
            whole.append(len(files) / (time.perf_counter() - start))
            pipeline.append(clock.steady_rate() or result["images_per_second"])
            pipeline_mean.append(clock.mean_rate() or result["images_per_second"])
            used_workers = result["workers"]
        best_bare, best_pipe = max(bare), max(pipeline)
        report = {
            "machine": machine_info(torch_device),
            "arch": arch,
            "image_size": backbone.info["image_size"],
            "images": len(files),
            "jpeg_size": list(SIZE),
            "batch_size": batch_size,
            "workers": used_workers,
            "torch_threads": torch.get_num_threads(),
            "rounds": rounds,
            "bare_images_per_second": bare,
            "pipeline_images_per_second": pipeline,
            "bare_mean_images_per_second": bare_mean,
            "pipeline_mean_images_per_second": pipeline_mean,
            "whole_call_images_per_second": whole,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "best_bare": best_bare,
            "best_pipeline": best_pipe,
            "pipeline_fraction_of_bare": best_pipe / best_bare,
            "round_fractions": [p / b for p, b in zip(pipeline, bare, strict=True)],
            "median_round_fraction": float(
                np.median([p / b for p, b in zip(pipeline, bare, strict=True)])
            ),
            "decode_images_per_second_per_core": per_core,
            "workers_to_keep_up": math.ceil(best_bare / per_core),
        }
        return report
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def format_report(r: dict) -> str:
    m = r["machine"]
    return "\n".join(
        [
            f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {r['torch_threads']} threads, "
            f"device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""),
            f"{r['arch']} (random weights) at {r['image_size'][0]} px, batch {r['batch_size']}, "
            f"{r['images']} JPEGs of {r['jpeg_size'][0]}x{r['jpeg_size'][1]}, "
            f"{r['workers']} DataLoader workers, best of {r['rounds']} interleaved rounds",
            f"bare forward (pre-decoded tensors): {r['best_bare']:8.1f} images/s",
            f"whole pipeline (decode->write):     {r['best_pipeline']:8.1f} images/s "
            f"= {100 * r['pipeline_fraction_of_bare']:.1f}% of the bare forward "
            f"(rounds: {', '.join(f'{100 * f:.0f}%' for f in r['round_fractions'])}, "
            f"median {100 * r['median_round_fraction']:.0f}%)",
            f"whole call incl. start-up and assembly: {max(r['whole_call_images_per_second']):.1f} "
            f"images/s; load average {r['load_average_before'][0]:.2f} before, "
            f"{r['load_average_after'][0]:.2f} after",
            f"decode + transform: {r['decode_images_per_second_per_core']:.1f} images/s per core "
            f"-> {r['workers_to_keep_up']} worker(s) keep up with this model",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusterbench perf extract",
        description="Extraction pipeline images/s against the bare model forward.",
    )
    parser.add_argument("--arch", default="resnet18", help="timm model (random weights)")
    parser.add_argument("--images", type=int, default=384, help="generated train JPEGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="auto", help="images.workers (auto or a number)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", default="bench_extract.json", help="JSON report path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if args.quick:
        args.arch, args.images, args.batch_size, args.rounds = "test_vit", 32, 8, 1
    report = run(args.arch, args.images, args.batch_size, args.workers, args.device, args.rounds)
    print(format_report(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
