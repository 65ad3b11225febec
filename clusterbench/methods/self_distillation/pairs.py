"""Nearest-neighbour pairs (x, x') for self-distillation training, sampled a batch at a time.

Each epoch is a permutation of all anchors; every anchor x is paired with one of its `knn`
nearest neighbours drawn uniformly afresh each epoch. Permutation and draws come from a
generator seeded by (seed, epoch), so every process builds the same global schedule and takes
a disjoint slice of each global batch: a DDP run sees exactly the batches of one process with
the global batch size.

A step's batch is built from index tensors (anchor ids, neighbour ids); features are gathered
by indexing, on the accelerator when `features_on_device` (default) or on the CPU otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import Rows, as_rows, to_device

ArrayLike = np.ndarray | Tensor


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends on (seed, epoch) only."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))


class AnchorBatchSampler(DistributedSampler):
    """Yields this process's (anchor ids, neighbour column) tensors, one pair per step.

    A `DistributedSampler` subclass so Lightning neither replaces it nor forgets to call
    `set_epoch`. `batch_size` is the global batch; each of the `num_replicas` processes gets an
    equal, disjoint slice of every global batch. Without `drop_last` the permutation is padded
    by wrapping around only as far as needed to split the last batch evenly (no padding on a
    single process, so one epoch visits every anchor exactly once).
    """

    def __init__(
        self,
        num_anchors: int,
        batch_size: int,
        knn: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            range(num_anchors), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed
        )
        if batch_size % num_replicas:
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by the number of processes "
                f"({num_replicas})"
            )
        if drop_last and num_anchors < batch_size:
            raise ConfigError(
                f"batch_size {batch_size} exceeds the {num_anchors} training samples with "
                "drop_last=True: no batch would be produced"
            )
        self.num_anchors = num_anchors
        self.batch_size = batch_size
        self.knn = knn
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_anchors // self.batch_size
        return math.ceil(self.num_anchors / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.num_anchors, generator=gen)
        columns = torch.randint(0, self.knn, (self.num_anchors,), generator=gen)
        for step in range(len(self)):
            start = step * self.batch_size
            positions = torch.arange(start, min(start + self.batch_size, self.num_anchors))
            short = (-len(positions)) % self.num_replicas
            if short:  # wrap around so the last batch splits evenly across processes
                positions = torch.cat([positions, torch.arange(short) % self.num_anchors])
            mine = positions.view(self.num_replicas, -1)[self.rank]
            yield order[mine], columns[mine]


class PairIndexDataset(Dataset):
    """Maps a step's (anchor ids, neighbour columns) to index tensors, or features on CPU."""

    def __init__(self, neighbours: Tensor, features: Rows | None = None) -> None:
        self.neighbours = neighbours
        self.features = features

    def __len__(self) -> int:
        return int(self.neighbours.shape[0])

    def __getitem__(self, item: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        anchors, columns = item
        pairs = self.neighbours[anchors, columns]
        batch = {"anchor_index": anchors, "neighbour_index": pairs}
        if self.features is not None:
            batch["anchor"] = torch.as_tensor(self.features.take(anchors.numpy()))
            batch["neighbour"] = torch.as_tensor(self.features.take(pairs.numpy()))
        return batch


class NeighbourPairDataModule(L.LightningDataModule):
    """Training pairs (x, x') from a feature matrix and its nearest-neighbour table.

    Batches reach the LightningModule as dicts with `anchor` and `neighbour` features (B, D)
    plus their row ids `anchor_index` and `neighbour_index` (B,).

    Args:
        features: (N, D) float16/float32 train features: a tensor, an array or memmap, or a
            row view with `__len__`, `take(rows)` and `chunk(start, stop)`.
        neighbours: (N, k') int64 neighbour ids per row, nearest first; first `knn` are used.
        knn: number of nearest neighbours to draw x' from.
        batch_size: global number of pairs per step (split across DDP processes).
        seed: seeds the per-epoch permutation and neighbour draws.
        drop_last: drop the last incomplete global batch of each epoch.
        features_on_device: keep the whole feature matrix on the accelerator and gather
            there; otherwise gather on the CPU (per batch, memmap friendly) and transfer.
        num_workers: DataLoader workers (only useful for CPU gathering from a memmap).
    """

    def __init__(
        self,
        features: Rows | Tensor | np.ndarray,
        neighbours: ArrayLike,
        knn: int = 50,
        batch_size: int = 512,
        seed: int = 0,
        drop_last: bool = False,
        features_on_device: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if hasattr(features, "shape") and len(features.shape) != 2:
            raise ConfigError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
        self.features = as_rows(features)
        self.neighbours = _validate_neighbours(neighbours, len(self.features), knn)
        self.knn = knn
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.features_on_device = features_on_device
        self.num_workers = num_workers
        self._device_features: Tensor | None = None

    @property
    def num_samples(self) -> int:
        return len(self.features)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = AnchorBatchSampler(
            self.num_samples,
            self.batch_size,
            self.knn,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            drop_last=self.drop_last,
        )
        dataset = PairIndexDataset(
            self.neighbours, None if self.features_on_device else self.features
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,  # the sampler already yields whole batches
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict:
        if "anchor" in batch:
            return batch
        features = self._features_on(batch["anchor_index"].device)
        return {
            **batch,
            "anchor": features[batch["anchor_index"]],
            "neighbour": features[batch["neighbour_index"]],
        }

    def _features_on(self, device: torch.device) -> Tensor:
        """The feature matrix on `device`, copied there once."""
        if self._device_features is None or self._device_features.device != device:
            self._device_features = to_device(self.features, device)
        return self._device_features

    def teardown(self, stage: str) -> None:
        self._device_features = None


def _validate_neighbours(neighbours: ArrayLike, num_samples: int, knn: int) -> Tensor:
    """The first `knn` columns as a CPU int64 tensor, after checking shape, dtype and range."""
    shape = tuple(neighbours.shape)
    if len(shape) != 2 or shape[0] != num_samples:
        raise ConfigError(f"neighbours must have shape (N={num_samples}, k), got {shape}")
    if not 1 <= knn <= shape[1]:
        raise ConfigError(f"knn={knn} but the neighbour table has {shape[1]} columns")
    if isinstance(neighbours, Tensor):
        if neighbours.is_floating_point() or neighbours.is_complex():
            raise ConfigError(f"neighbours must be integers, got dtype {neighbours.dtype}")
        table = neighbours[:, :knn].to(device="cpu", dtype=torch.int64).contiguous()
    else:
        if not np.issubdtype(neighbours.dtype, np.integer):
            raise ConfigError(f"neighbours must be integers, got dtype {neighbours.dtype}")
        table = torch.from_numpy(np.array(neighbours[:, :knn], dtype=np.int64))
    if table.numel() and (int(table.min()) < 0 or int(table.max()) >= num_samples):
        raise ConfigError(f"neighbour ids must lie in [0, {num_samples})")
    return table
