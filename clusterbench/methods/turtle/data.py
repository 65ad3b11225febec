"""TURTLE's training batches: a fresh sample of rows each outer step, gathered from every
representation space with the same indices and stacked as one (S, b, D_max) tensor.

Step t's rows are the first `batch_size` of a permutation drawn from a generator seeded by
(seed, t) alone: the schedule does not depend on how steps are grouped into epochs, so a
resumed run sees the batches an uninterrupted one would. Under DDP every process draws the
same global batch and keeps its own equal, disjoint slice of it (the global batch is cut to a
multiple of the number of processes).

Spaces of different dimension are zero-padded to the largest one (`pad_spaces`): a zero input
coordinate contributes nothing to a linear map, so the stacked product over spaces equals each
space's own product.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import Rows, to_device


def step_generator(seed: int, step: int, stream: int = 0, device: str | torch.device = "cpu"):
    """A generator on `device` whose stream depends on (seed, step, stream) only."""
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1, np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0]) & ((1 << 63) - 1))


def pad_spaces(blocks: list[Tensor], width: int) -> Tensor:
    """Row-aligned (b, d_s) blocks, one per space, as one (S, b, width) tensor, zero-padded."""
    if all(block.shape[1] == width for block in blocks):
        return torch.stack(blocks)
    out = blocks[0].new_zeros((len(blocks), blocks[0].shape[0], width))
    for s, block in enumerate(blocks):
        out[s, :, : block.shape[1]] = block
    return out


class OuterStepSampler(DistributedSampler):
    """Yields this process's row ids for each outer step of an epoch of `steps_per_epoch`.

    A `DistributedSampler` subclass so Lightning neither replaces it nor forgets `set_epoch`.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        steps_per_epoch: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            range(num_rows), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed
        )
        self.num_rows = num_rows
        self.batch_size = (min(batch_size, num_rows) // num_replicas) * num_replicas
        if self.batch_size < 1:
            raise ConfigError(
                f"a batch of {min(batch_size, num_rows)} rows cannot be split across "
                f"{num_replicas} processes"
            )
        self.steps_per_epoch = steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(self.steps_per_epoch):
            step = self.epoch * self.steps_per_epoch + i
            order = torch.randperm(self.num_rows, generator=step_generator(self.seed, step))
            batch = order[: self.batch_size]  # sampled without replacement
            yield batch.view(self.num_replicas, -1)[self.rank]


class _RowIds(Dataset):
    """Maps a step's row ids to themselves, or to the padded rows gathered on the CPU."""

    def __init__(self, num_rows: int, spaces: list[Rows] | None, width: int) -> None:
        self.num_rows, self.spaces, self.width = num_rows, spaces, width

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, rows: Tensor) -> dict[str, Tensor]:
        batch = {"index": rows}
        if self.spaces is not None:
            ids = rows.numpy()
            blocks = [torch.as_tensor(s.take(ids)) for s in self.spaces]
            batch["spaces"] = pad_spaces(blocks, self.width)
        return batch


class TurtleDataModule(L.LightningDataModule):
    """Outer-step batches from row-aligned spaces; they reach the module as
    `{"index": (b,), "spaces": (S, b, D_max)}`.

    Args:
        spaces: the train rows of each representation space (same rows, same order).
        batch_size: global rows per outer step, at most the number of rows.
        steps_per_epoch: outer steps per Lightning epoch (checkpoint and log granularity).
        seed: seeds every step's sample.
        features_on_device: copy every space to the accelerator once and gather there;
            otherwise gather from the (memory-mapped) rows on the CPU each step.
    """

    def __init__(
        self,
        spaces: list[Rows],
        batch_size: int,
        steps_per_epoch: int,
        seed: int = 0,
        features_on_device: bool = True,
    ) -> None:
        super().__init__()
        if not spaces:
            raise ConfigError("TURTLE needs at least one representation space")
        sizes = {len(s) for s in spaces}
        if len(sizes) != 1:
            raise ConfigError(f"the representation spaces have different row counts: {sizes}")
        self.spaces = spaces
        self.num_rows = len(spaces[0])
        self.width = max(s.dim for s in spaces)
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.features_on_device = features_on_device
        self._device_spaces: list[Tensor] | None = None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = OuterStepSampler(
            self.num_rows, self.batch_size, self.steps_per_epoch, self.seed, world, rank
        )
        dataset = _RowIds(self.num_rows, None if self.features_on_device else self.spaces,
                          self.width)  # fmt: skip
        return DataLoader(dataset, sampler=sampler, batch_size=None)

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict:
        if "spaces" in batch:
            return batch
        index = batch["index"]
        blocks = [features[index] for features in self._spaces_on(index.device)]
        return {**batch, "spaces": pad_spaces(blocks, self.width)}

    def _spaces_on(self, device: torch.device) -> list[Tensor]:
        """Every space's rows on `device`, copied there once (NaN / inf rows refused)."""
        if self._device_spaces is None or self._device_spaces[0].device != device:
            self._device_spaces = [
                to_device(s, device, torch.float32, check_finite=f"space {i} (train)")
                for i, s in enumerate(self.spaces)
            ]
        return self._device_spaces

    def teardown(self, stage: str) -> None:
        self._device_spaces = None
