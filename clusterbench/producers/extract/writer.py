"""Shards and assembly: how an extraction survives being killed at any moment.

`ShardWriter` collects predicted batches into shards and records each in the work directory
(`workdir`: plan, shards, manifests, what of it may be deleted). Assembly streams the shards of
each split into memory-mapped .npy files in a temporary directory, writes labels, file lists,
classes.txt, skipped.txt and meta.json (last, with made_by), and renames the directory onto the
store; then the work directory's own files are removed. An existing directory at the store is
replaced only when it is empty or a store that extraction made (`store_problem`), and a store
only with overwrite=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from clusterbench.core.atomic import atomic_file, replace_dir, write_json_atomic
from clusterbench.core.errors import ExtractionError
from clusterbench.data.store_writer import write_store_files
from clusterbench.producers.extract.decode import stamp_digest
from clusterbench.producers.extract.images import SPLITS, Listing
from clusterbench.producers.extract.workdir import MADE_BY, Shard, WorkDir

__all__ = ["STORE_FILES", "ShardWriter", "assemble", "install", "store_is_complete"]
__all__ += ["store_problem"]

STORE_FILES = ("train.npy", "train_labels.npy", "val.npy", "val_labels.npy", "meta.json")
# Everything assembly writes into a store: all that replacing one may delete.
STORE_ENTRIES = {*STORE_FILES, "train_files.txt", "val_files.txt", "classes.txt", "skipped.txt"}
DTYPES = {"float16": np.float16, "float32": np.float32}


def store_is_complete(store: Path) -> bool:
    """A finished store: train features and meta.json (labels and val exist when the images
    had them)."""
    return all((store / name).is_file() for name in ("train.npy", "meta.json"))


def store_problem(store: Path) -> str:
    """Why extraction may not replace the directory `store` ("" when it may: it is empty, or
    a feature store that extraction wrote, recognised by its meta.json's made_by, or by its
    plan_digest for stores written before made_by was recorded, holding nothing else)."""
    if store.is_symlink() and not store.exists():
        return "is a broken symbolic link"
    if not store.exists():
        return ""
    if not store.is_dir():
        return "exists and is not a directory"
    entries = sorted(p.name for p in store.iterdir())
    if not entries:
        return ""
    try:
        meta = json.loads((store / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if isinstance(meta, dict) and (meta.get("made_by") == MADE_BY or "plan_digest" in meta):
        if other := [e for e in entries if e not in STORE_ENTRIES]:
            return (
                f"is a store extraction made but also holds files it never writes "
                f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}): move them out "
                "first, replacing the store would delete them"
            )
        return ""
    return (
        "exists and is not empty, and is not a feature store that clusterbench extract made "
        f"(it holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}; no meta.json "
        f"with made_by={MADE_BY}); extraction only ever replaces a store it made, whatever "
        "overwrite says: choose a new or empty directory"
    )


class _Buffer:
    """The rows of one shard as its batches arrive."""

    def __init__(self, shard: Shard, dim: int, dtype) -> None:
        self.shard = shard
        self.features = np.zeros((len(shard), dim), dtype=dtype)
        self.stamps = np.full((len(shard), 2), -1, dtype=np.int64)  # (size, mtime_ns) per row
        self.filled = 0
        self.skipped: list[list] = []


class ShardWriter(BasePredictionWriter):
    """Collects predicted batches into fixed-size shards and writes each once complete.

    Batches never straddle shards (`ShardBatches`), so a shard's rows, and the batches that
    computed them, are the same in every run. Writing happens on a background thread, so
    saving and fsync overlap the next batches; `stop_after_shards` kills the process
    (SIGKILL, as `kill -9`) after that many shards of this process are recorded.
    """

    def __init__(
        self,
        work: WorkDir,
        shards: dict[str, list[Shard]],
        shard_size: int,
        dtype: str,
        max_skipped: int,
        files: dict | None = None,
        stop_after_shards: int | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.work, self.dtype = work, DTYPES[dtype]
        self.by_start = {s: {sh.start: sh for sh in shards[s]} for s in SPLITS}
        self.shard_size = shard_size
        self.max_skipped = max_skipped  # images over all splits; more fail the run
        self.files = files or {}
        self.skipped_files: list[str] = []
        self.stop_after = stop_after_shards
        self.splits: tuple[str, ...] = SPLITS
        self._open: dict[str, _Buffer] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.written = 0
        self.skipped = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        split = self.splits[dataloader_idx]
        features = prediction.detach().float().cpu().numpy()
        index = batch["index"].cpu().numpy()
        ok = batch["ok"].cpu().numpy().astype(bool)
        first = int(index[0])
        buffer = self._open.get(split)
        if buffer is None:
            start = first - first % self.shard_size
            buffer = _Buffer(self.by_start[split][start], features.shape[1], self.dtype)
            self._open[split] = buffer
        local = index - buffer.shard.start
        buffer.features[local] = features.astype(self.dtype)
        buffer.features[local[~ok]] = 0
        buffer.stamps[local, 0] = batch["size"].cpu().numpy()
        buffer.stamps[local, 1] = batch["mtime_ns"].cpu().numpy()
        for i in np.flatnonzero(~ok):
            buffer.skipped.append([int(local[i]), str(batch["error"][i])])
        buffer.filled += len(index)
        if buffer.filled == len(buffer.shard):
            del self._open[split]
            self._submit(trainer.global_rank, buffer)

    def _submit(self, rank: int, buffer: _Buffer) -> None:
        while len(self._pending) >= 2:  # bounded memory: at most two shards in flight
            self._pending.pop(0).result()
        assert self._pool is not None
        self._pending.append(self._pool.submit(self._write, rank, buffer))

    def _write(self, rank: int, buffer: _Buffer) -> None:
        stamp = stamp_digest(buffer.stamps)
        self.work.write_shard(rank, buffer.shard, buffer.features, buffer.skipped, stamp)
        self.written += 1
        self.skipped += len(buffer.skipped)
        table = self.files.get(buffer.shard.split)
        for local, reason in buffer.skipped:
            name = table[buffer.shard.start + local] if table is not None else f"row {local}"
            self.skipped_files.append(f"{name} ({reason})")
        if self.skipped > self.max_skipped:  # this rank alone is already over the limit
            raise ExtractionError(
                f"{self.skipped} images could not be decoded, more than max_skipped_fraction "
                f"allows ({self.max_skipped} images), e.g. {'; '.join(self.skipped_files[:3])}; "
                f"the finished shards stay in {self.work.path} for a rerun"
            )
        if self.stop_after is not None and self.written >= self.stop_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_predict_end(self, trainer, pl_module) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        if self._open:
            raise ExtractionError(f"predictions ended inside a shard ({sorted(self._open)})")
        trainer.strategy.barrier("clusterbench-extract-written")


# ------------------------------------------------------------------------------------ assembly
def skipped_report(listing: Listing, done: dict[tuple[str, int], dict]) -> list[tuple[str, str]]:
    """(relative path, reason) of every image no shard could decode, in store order."""
    rows = []
    for split in SPLITS:
        files = listing.splits[split].files
        for key in sorted(k for k in done if k[0] == split):
            entry = done[key]
            for local, reason in entry["skipped"]:
                rows.append((files[int(entry["start"]) + int(local)], reason))
    return rows


def assemble(
    work: WorkDir,
    listing: Listing,
    shards: dict[str, list[Shard]],
    dtype: str,
    store: Path,
    meta: dict,
    max_skipped_fraction: float,
    overwrite: bool,
) -> dict:
    """Stream the finished shards into the store (see the module docstring); return meta."""
    done = work.done()
    missing = [sh for s in SPLITS for sh in shards[s] if sh.key not in done]
    if missing:
        raise ExtractionError(
            f"{len(missing)} shards are not finished (e.g. {missing[0].name}); a rank stopped "
            "early: rerun the same command to complete them"
        )
    skipped = skipped_report(listing, done)
    total = sum(len(listing.splits[s]) for s in SPLITS)
    if len(skipped) > max_skipped_fraction * total:
        report = work.path / "skipped.txt"
        with atomic_file(report) as tmp:
            tmp.write_text("".join(f"{p}\t{r}\n" for p, r in skipped))
        raise ExtractionError(
            f"{len(skipped)} of {total} images ({100 * len(skipped) / total:.2f}%) could not "
            f"be decoded, above max_skipped_fraction={max_skipped_fraction}; they are listed "
            f"in {report} (raise max_skipped_fraction to build the store without them)"
        )
    tmp = work.path / "store.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts = {}
    dim = None
    for split in SPLITS:
        part = listing.splits[split]
        if len(part) == 0:  # no val images (a flat folder without one): no val split
            counts[split] = 0
            continue
        keep = np.ones(len(part), dtype=bool)
        for sh in shards[split]:
            for local, _ in done[sh.key]["skipped"]:
                keep[sh.start + int(local)] = False
        n = int(keep.sum())
        if n == 0:
            raise ExtractionError(f"no {split} image could be decoded; nothing to store")
        first = np.load(work.shards / shards[split][0].name, mmap_mode="r")
        dim = int(first.shape[1]) if dim is None else dim
        out = np.lib.format.open_memmap(tmp / f"{split}.npy", "w+", DTYPES[dtype], (n, dim))
        row = 0
        for sh in shards[split]:
            block = np.load(work.shards / sh.name, mmap_mode="r")
            if block.shape != (len(sh), dim):
                raise ExtractionError(
                    f"{work.shards / sh.name} has shape {block.shape}, expected {(len(sh), dim)}"
                )
            rows = np.asarray(block)[keep[sh.start : sh.stop]]
            out[row : row + len(rows)] = rows
            row += len(rows)
        out.flush()
        del out
        if listing.labelled:
            np.save(tmp / f"{split}_labels.npy", part.labels[keep])
        write_store_files(tmp, files={split: [part.files[int(i)] for i in np.flatnonzero(keep)]})
        counts[split] = n
    write_store_files(tmp, classes=listing.classes if listing.labelled else None)
    (tmp / "skipped.txt").write_text("".join(f"{p}\t{r}\n" for p, r in skipped))
    meta = {
        **meta,
        "dim": dim,
        "dtype": dtype,
        "counts": counts,
        "num_classes": len(listing.classes),
        "skipped": {"count": len(skipped), "files": [p for p, _ in skipped]},
        "ignored_non_image_files": dict(listing.ignored),
    }
    write_json_atomic(tmp / "meta.json", meta)
    _fsync_dir(tmp)
    install(tmp, store, overwrite)
    work.clear()
    return meta


def install(tmp: Path, store: Path, overwrite: bool) -> None:
    """Rename the finished directory onto `store`: an empty directory is taken, a store that
    extraction made is replaced only with overwrite (and goes only once replaced), anything
    else is refused whatever overwrite says."""
    store.parent.mkdir(parents=True, exist_ok=True)
    if why := store_problem(store):
        raise ExtractionError(f"store={store} {why} (the finished store waits in {tmp})")
    if store.exists() and any(store.iterdir()):
        if not overwrite:
            raise ExtractionError(f"{store} already exists; pass overwrite=true to replace it")
        replace_dir(tmp, store, overwrite=True)
    else:
        if store.exists():
            store.rmdir()
        replace_dir(tmp, store)


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())
