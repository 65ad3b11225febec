"""Shards, manifest and assembly: how an extraction survives being killed at any moment.

Work directory (`<store>.partial` unless `work_dir` is set), shared by all ranks:
    plan.json                  what is being extracted (extractor, image list digest, dtype,
                               shard size); a rerun with another plan refuses to mix shards
    shards/<split>-<k>.npy     rows [k*S, (k+1)*S) of a split, written atomically
    manifest-<rank>.jsonl      one line per finished shard, appended (and fsynced) after the
                               shard's rename: a shard is done only with both
Assembly streams the shards of each split into memory-mapped .npy files in a temporary
directory, writes labels, file lists, classes.txt, skipped.txt and meta.json (last), and
renames the directory onto the store; then the work directory is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from clusterbench.core.atomic import atomic_file, replace_dir, write_json_atomic
from clusterbench.core.errors import ExtractionError
from clusterbench.core.fingerprint import digest
from clusterbench.data.store_writer import write_store_files
from clusterbench.producers.extract.images import SPLITS, Listing

STORE_FILES = ("train.npy", "train_labels.npy", "val.npy", "val_labels.npy", "meta.json")
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of one split."""

    split: str
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.npy"

    @property
    def key(self) -> tuple[str, int]:
        return (self.split, self.index)

    def __len__(self) -> int:
        return self.stop - self.start


def plan_shards(split: str, rows: int, shard_size: int) -> list[Shard]:
    return [
        Shard(split, k, start, min(start + shard_size, rows))
        for k, start in enumerate(range(0, rows, shard_size))
    ]


def store_is_complete(store: Path) -> bool:
    return all((store / name).is_file() for name in STORE_FILES)


class WorkDir:
    """The shards and manifests of one extraction (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.shards = self.path / "shards"
        self.plan_file = self.path / "plan.json"

    def check(self, plan: dict, overwrite: bool) -> None:
        """Refuse to resume another extraction's shards (read-only: every rank may call it)."""
        if overwrite or not self.plan_file.exists():
            return
        try:
            old = json.loads(self.plan_file.read_text())
        except (OSError, json.JSONDecodeError):
            return  # a plan cut short: prepare() starts over
        if old != plan:
            differs = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise ExtractionError(
                f"{self.path} holds shards of a different extraction (it differs in "
                f"{', '.join(differs)}); rerun the command that made them, delete the "
                "directory, or pass overwrite=true to start over"
            )

    def prepare(self, plan: dict) -> None:
        """Rank 0, before any shard is written: keep the shards of the same plan (also with
        overwrite=true, so a replacing run resumes too), else start afresh."""
        same = False
        if self.plan_file.exists():
            try:
                same = json.loads(self.plan_file.read_text()) == plan
            except (OSError, json.JSONDecodeError):
                same = False
        if not same and self.path.exists():
            shutil.rmtree(self.path)
        self.shards.mkdir(parents=True, exist_ok=True)
        if not same:
            write_json_atomic(self.plan_file, plan)

    def remove_if_installed(self, store: Path) -> None:
        """Remove this directory when `store` is the store it was assembled into (its meta
        names this plan): only a kill right after the final rename leaves it behind."""
        try:
            plan = json.loads(self.plan_file.read_text())
            meta = json.loads((store / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return
        if meta.get("plan_digest") == digest(plan):
            shutil.rmtree(self.path, ignore_errors=True)

    def done(self) -> dict[tuple[str, int], dict]:
        """Finished shards: a manifest line whose shard file exists with the recorded size."""
        entries: dict[tuple[str, int], dict] = {}
        for manifest in sorted(self.path.glob("manifest-*.jsonl")):
            for line in manifest.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    key = (entry["split"], int(entry["shard"]))
                    file = self.shards / entry["file"]
                    if file.is_file() and file.stat().st_size == int(entry["bytes"]):
                        entries[key] = entry
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut short by a kill: that shard is simply redone
        return entries

    def write_shard(self, rank: int, shard: Shard, features: np.ndarray, skipped: list) -> dict:
        """Write the shard file atomically, then record it in this rank's manifest."""
        file = self.shards / shard.name
        with atomic_file(file) as tmp, open(tmp, "wb") as fh:
            np.save(fh, features)
            fh.flush()
            os.fsync(fh.fileno())
        entry = {
            "split": shard.split,
            "shard": shard.index,
            "start": shard.start,
            "stop": shard.stop,
            "file": shard.name,
            "bytes": file.stat().st_size,
            "skipped": skipped,
        }
        manifest = self.path / f"manifest-{rank:05d}.jsonl"
        with open(manifest, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:  # a line cut short by a kill must not swallow this one
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write((json.dumps(entry) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        return entry


class _Buffer:
    """The rows of one shard as its batches arrive."""

    def __init__(self, shard: Shard, dim: int, dtype) -> None:
        self.shard = shard
        self.features = np.zeros((len(shard), dim), dtype=dtype)
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
        self.work.write_shard(rank, buffer.shard, buffer.features, buffer.skipped)
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
        np.save(tmp / f"{split}_labels.npy", part.labels[keep])
        write_store_files(tmp, files={split: [part.files[int(i)] for i in np.flatnonzero(keep)]})
        counts[split] = n
    write_store_files(tmp, classes=listing.classes)
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
    shutil.rmtree(work.path, ignore_errors=True)
    return meta


def install(tmp: Path, store: Path, overwrite: bool) -> None:
    """Rename the finished directory onto `store`; an old store goes only once replaced."""
    store.parent.mkdir(parents=True, exist_ok=True)
    if store.exists() and (store_is_complete(store) or any(store.iterdir())):
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
