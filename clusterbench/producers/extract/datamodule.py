"""The data side of an extraction: which rows each rank reads, in which batches (Lightning).

`ShardedImages` is the LightningDataModule: on setup, rank 0 prepares the work directory and
forgets the finished shards whose images changed since (size or mtime_ns, `WorkDir.drop_stale`),
and every rank takes every world-size-th shard not yet done; its DataLoaders decode with the
library's transform, batched by `ShardBatches` so that no batch crosses a shard boundary (every
run computes a shard's rows in the same batches). Kept apart from `run`, which only wires the
backbone, this data module, the shard writer and the Trainer together.
"""

from __future__ import annotations

import math
import sys

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from clusterbench.producers.extract.backbones.backbone import Backbone
from clusterbench.producers.extract.decode import ImageDataset
from clusterbench.producers.extract.images import SPLITS, Listing
from clusterbench.producers.extract.workdir import Shard, WorkDir


class ShardBatches(Sampler):
    """Batches that start at each shard's first row and never cross into the next shard,
    so every run computes a shard's rows in exactly the same batches."""

    def __init__(self, shards: list[Shard], batch_size: int) -> None:
        self.shards, self.batch_size = shards, batch_size

    def __iter__(self):
        for shard in self.shards:
            for start in range(shard.start, shard.stop, self.batch_size):
                yield list(range(start, min(start + self.batch_size, shard.stop)))

    def __len__(self) -> int:
        return sum(math.ceil(len(s) / self.batch_size) for s in self.shards)


class ShardedImages(LightningDataModule):
    """Both splits' images; each rank gets every world-size-th shard that is not done yet."""

    def __init__(
        self,
        listing: Listing,
        backbone: Backbone,
        work: WorkDir,
        plan: dict,
        shards: dict[str, list[Shard]],
        batch_size: int,
        workers: int,
        prefetch_factor: int | None,
        pin_memory: bool,
    ) -> None:
        super().__init__()
        self.listing, self.transform = listing, backbone.transform
        self.work, self.plan, self.shards = work, plan, shards
        self.batch_size, self.workers, self.prefetch_factor = batch_size, workers, prefetch_factor
        self.pin_memory = pin_memory
        self.assigned: dict[str, list[Shard]] = {s: [] for s in SPLITS}

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        if trainer.global_rank == 0:
            self.work.prepare(self.plan)
            stale = self.work.drop_stale(self.listing)
            if stale:
                print(
                    f"note: redoing {stale} finished shard(s) in {self.work.path}: their "
                    "images changed on disk since they were read (size or mtime)",
                    file=sys.stderr,
                )
        trainer.strategy.barrier("clusterbench-extract-prepared")
        done = self.work.done()
        for split in SPLITS:
            pending = [s for s in self.shards[split] if s.key not in done]
            self.assigned[split] = pending[trainer.global_rank :: trainer.world_size]

    def predict_dataloader(self) -> list[DataLoader]:
        loaders = []
        for split in SPLITS:
            dataset = ImageDataset(
                self.listing.root, self.listing.splits[split].files, self.transform
            )
            extra = {} if self.workers == 0 else {"prefetch_factor": self.prefetch_factor}
            loaders.append(
                DataLoader(
                    dataset,
                    batch_sampler=ShardBatches(self.assigned[split], self.batch_size),
                    num_workers=self.workers,
                    pin_memory=self.pin_memory,
                    **extra,
                )
            )
        return loaders
