"""Collectives, one home: sums and means across processes when torch.distributed runs (DDP
under Lightning or torchrun), plain local arithmetic when it does not.

The self-distillation losses take their batch means through here, so a DDP run computes what
one process holding the global batch would; distributed k-means and neighbour mining reduce
their sums the same way, over the even shards of `shard`, in processes `launch_fabric` starts.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a process group is running (several ranks may take part)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes taking part (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def check_same_on_every_rank(value: int | str, what: str) -> None:
    """Raise on every rank when the ranks hold different values of something each decided
    alone (an estimated K, the store's fingerprint): DDP would otherwise fail deep inside its
    parameter broadcast, and sharded work would silently mix two data sets."""
    if not is_distributed():
        return
    found: list = [None] * world_size()
    dist.all_gather_object(found, value)
    if len(set(found)) > 1:
        from clusterbench.core.errors import ConfigError

        raise ConfigError(
            f"the processes disagree on {what}: {found} (one per rank); set it explicitly "
            "so that every rank uses the same value"
        )


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` in place across processes when running distributed; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def distributed_mean(total: Tensor, count: int) -> Tensor:
    """Global mean from a local sum over `count` rows, so that DDP equals one large batch.

    total: (...) local sum; count: rows summed on this process. One collective call.
    """
    packed = torch.cat([total.reshape(-1), total.new_tensor([float(count)])])
    all_reduce_sum(packed)
    return (packed[:-1] / packed[-1]).reshape(total.shape)


class _AllReduceSum(torch.autograd.Function):
    """Sum across processes whose backward also sums, so every process's rows get gradient."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return all_reduce_sum(grad.clone())


def differentiable_global_mean(values: Tensor, dim: int) -> Tensor:
    """Mean over `dim` across all processes, differentiable.

    Under DDP's gradient averaging this gives exactly the gradient of one process that holds
    the global batch (each rank's share of the backward sum is scaled back by the averaging).
    """
    if not is_distributed():
        return values.mean(dim=dim)
    count = all_reduce_sum(values.new_tensor([float(values.shape[dim])]))
    return _AllReduceSum.apply(values.sum(dim=dim)) / count


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's share of n rows: contiguous, sizes differing by at most one."""
    if world > n:
        from clusterbench.core.errors import ConfigError

        raise ConfigError(
            f"{world} processes for {n} training rows: every process needs at least one row; "
            "use fewer processes (trainer.devices x trainer.num_nodes)"
        )
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def launch_fabric(trainer: dict):
    """Processes as the trainer config describes them (accelerator, devices, num_nodes,
    strategy): Lightning starts the local ones, or joins those SLURM / torchrun started."""
    from lightning.fabric import Fabric

    keys = ("accelerator", "devices", "num_nodes", "strategy")
    fabric = Fabric(**{k: trainer[k] for k in keys if k in trainer})
    fabric.launch()
    return fabric


def collective(what: str, call, *args):
    """`call(*args)` (an all-reduce, a barrier), with a process that died on the way reported
    as one line instead of the backend's trace: the job then fails and writes nothing."""
    try:
        return call(*args)
    except (RuntimeError, dist.DistBackendError) as exc:
        from clusterbench.core.errors import ClusterbenchError

        rank = dist.get_rank() if is_distributed() else 0
        raise ClusterbenchError(
            f"rank {rank}: another process of the job stopped during {what} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); nothing was written "
            "after the last checkpoint: rerun the same command to continue"
        ) from None
