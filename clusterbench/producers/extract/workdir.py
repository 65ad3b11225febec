"""The work directory: what an extraction has finished, and what of it the tool may delete.

Layout (`<store>.partial` unless `work_dir` is set), shared by all ranks:
    work_dir.json              the marker: this directory is an extraction's work directory
                               (and whether the tool created it)
    lock                       held by the running extraction's rank 0 (`lock.WorkLock`)
    plan.json                  what is being extracted (extractor, image list digest, dtype,
                               shard size); a rerun with another plan refuses to mix shards
    shards/<split>-<k>.npy     rows [k*S, (k+1)*S) of a split, written atomically
    manifest-<rank>.jsonl      one line per finished shard, appended (and fsynced) after the
                               shard's rename: a shard is done only with both. The line records
                               the digest of its images' (size, mtime_ns) as read
The tool only ever deletes what it made: a directory is used as the work directory only when
it does not exist yet, is empty, or holds the marker or a plan of an extraction; anything else
is refused, whatever `overwrite` says. Cleaning up removes the entries above by name and the
directory itself only when it then is empty and the tool had created it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterbench.core.atomic import atomic_file, write_json_atomic
from clusterbench.core.errors import ExtractionError
from clusterbench.core.fingerprint import digest
from clusterbench.producers.extract.decode import stamp_digest, stamps
from clusterbench.producers.extract.images import Listing
from clusterbench.producers.extract.lock import WorkLock

MADE_BY = "clusterbench.producers.extract"  # the marker's and the store meta's made_by
MARKER = "work_dir.json"
LOCK = "lock"
PLAN_KEYS = {"version", "extractor", "images", "dtype", "shard_size"}
# Entries of a work directory the tool writes (atomic_file's temporaries start with a dot).
_OWN = re.compile(
    r"(work_dir\.json|lock|plan\.json|manifest-\d+\.jsonl|skipped\.txt|store\.tmp|shards"
    r"|\.(work_dir\.json|plan\.json|skipped\.txt|manifest-\d+\.jsonl)\..*\.tmp)"
)
_OWN_SHARD = re.compile(r"(train|val)-\d{6}\.npy|\.(train|val)-\d{6}\.npy\..*\.tmp")


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


def _read_json(file: Path) -> dict | None:
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class WorkDir:
    """The shards and manifests of one extraction (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.shards = self.path / "shards"
        self.plan_file = self.path / "plan.json"
        self.marker = self.path / MARKER

    # --------------------------------------------------------------------------- ownership
    def foreign(self) -> str:
        """Why this path may not serve as the work directory ("" when it may)."""
        if self.path.is_symlink() and not self.path.exists():
            return "is a broken symbolic link"
        if not self.path.exists():
            return ""
        if not self.path.is_dir():
            return "exists and is not a directory"
        if (_read_json(self.marker) or {}).get("made_by") == MADE_BY:
            return ""
        if PLAN_KEYS <= set(_read_json(self.plan_file) or {}):
            return ""  # made before the marker existed: its plan says whose it is
        entries = sorted(p.name for p in self.path.iterdir())
        if all(name.startswith(f".{MARKER}.") for name in entries):
            return ""  # empty, or the marker being written by rank 0 right now
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return (
            f"exists and holds files that clusterbench extract did not make ({shown}; no "
            f"{MARKER} or plan.json of an extraction)"
        )

    def check_owned(self) -> None:
        if why := self.foreign():
            raise ExtractionError(
                f"work_dir={self.path} {why}; extraction only ever writes into and deletes from "
                "a work directory it made, whatever overwrite says: choose a new or empty "
                "directory"
            )

    def _make(self, created: bool | None = None) -> bool:
        """Create the directory (or adopt an empty one) and mark it as the tool's; returns
        whether this call created it (or `created`, when given)."""
        if self.marker.exists():
            return bool(created)
        created = not self.path.exists() if created is None else created
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.marker, {"made_by": MADE_BY, "created": created})
        return created

    def claim(self, what: str) -> WorkLock:
        """Rank 0, first thing: refuse a directory that is not the tool's, make it, lock it."""
        self.check_owned()
        for _ in range(10):
            created = self._make()
            try:
                lock = WorkLock.acquire(self.path / LOCK, what)
            except FileNotFoundError:
                continue  # a finishing run's cleanup removed the directory just now
            self._make(created)  # again under the lock: that cleanup may have taken the marker
            return lock
        raise ExtractionError(f"{what}: the work directory keeps disappearing; try again")

    def clear(self) -> None:
        """Delete what the tool wrote here (plan, manifests, shards, assembly leftovers), by
        name; the marker and the lock stay, and so does anything else (a file someone left)."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name in (MARKER, LOCK) or not _OWN.fullmatch(entry.name):
                continue
            if entry.name == "shards" and entry.is_dir() and not entry.is_symlink():
                for shard in entry.iterdir():
                    if _OWN_SHARD.fullmatch(shard.name) and not shard.is_dir():
                        shard.unlink(missing_ok=True)
                _rmdir_if_empty(entry)
            elif entry.name == "store.tmp" and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif not entry.is_dir():
                entry.unlink(missing_ok=True)

    def tidy(self) -> None:
        """Once none of the tool's files but the marker is left: remove the marker, and the
        directory when the tool created it and nothing else is in it (an empty directory the
        user gave, or one where someone left a file, stays)."""
        if not self.path.is_dir() or not self.marker.exists():
            return
        others = [p.name for p in self.path.iterdir() if p.name != MARKER]
        if any(_OWN.fullmatch(name) for name in others):
            return  # shards to resume from, or the lock of a running extraction
        created = (_read_json(self.marker) or {}).get("created", False)
        self.marker.unlink(missing_ok=True)
        if created and not others:
            _rmdir_if_empty(self.path)

    # ------------------------------------------------------------------------------- plan
    def check(self, plan: dict, overwrite: bool) -> None:
        """Refuse to resume another extraction's shards (read-only: every rank may call it)."""
        if overwrite or not self.plan_file.exists():
            return
        old = _read_json(self.plan_file)
        if old is None:
            return  # a plan cut short: prepare() starts over
        if old != plan:
            differs = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise ExtractionError(
                f"{self.path} holds shards of a different extraction (it differs in "
                f"{', '.join(differs)}); rerun the command that made them, or pass "
                "overwrite=true to discard them and start over"
            )

    def prepare(self, plan: dict) -> None:
        """Rank 0, before any shard is written: keep the shards of the same plan (also with
        overwrite=true, so a replacing run resumes too), else clear them and start afresh."""
        same = _read_json(self.plan_file) == plan
        if not same:
            self.clear()
        self._make()
        self.shards.mkdir(parents=True, exist_ok=True)
        if not same:
            write_json_atomic(self.plan_file, plan)

    def drop_stale(self, listing: Listing) -> int:
        """Rank 0, after `prepare`: forget the finished shards whose images changed on disk
        since they were read (size or mtime_ns differ, or a file is gone); returns how many.
        Their manifest lines are rewritten away, then their files deleted, so they are redone."""
        done = self.done()

        def changed(entry: dict) -> bool:
            part = listing.splits[entry["split"]]
            rows = stamps(listing.root, part.files, int(entry["start"]), int(entry["stop"]))
            return entry.get("stamp") != stamp_digest(rows)

        with ThreadPoolExecutor(max_workers=8) as pool:
            verdicts = list(pool.map(changed, done.values()))
        stale = {key for key, bad in zip(done, verdicts, strict=True) if bad}
        if not stale:
            return 0
        for manifest in sorted(self.path.glob("manifest-*.jsonl")):
            kept = [
                line
                for line in manifest.read_text().splitlines()
                if (entry := _parse(line)) is not None and (entry[0], entry[1]) not in stale
            ]
            with atomic_file(manifest) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept))
        for key in stale:
            (self.shards / done[key]["file"]).unlink(missing_ok=True)
        return len(stale)

    def remove_if_installed(self, store: Path) -> None:
        """Clean up when `store` is the store this directory was assembled into (its meta
        names this plan): only a kill right after the final rename leaves it behind."""
        plan = _read_json(self.plan_file)
        meta = _read_json(store / "meta.json")
        if plan is not None and meta is not None and meta.get("plan_digest") == digest(plan):
            self.clear()
            self.tidy()

    # ------------------------------------------------------------------------------ shards
    def done(self) -> dict[tuple[str, int], dict]:
        """Finished shards: a manifest line whose shard file exists with the recorded size."""
        entries: dict[tuple[str, int], dict] = {}
        for manifest in sorted(self.path.glob("manifest-*.jsonl")):
            for line in manifest.read_text().splitlines():
                parsed = _parse(line)
                if parsed is None:
                    continue  # a line cut short by a kill: that shard is simply redone
                split, index, entry = parsed
                try:
                    file = self.shards / entry["file"]
                    if file.is_file() and file.stat().st_size == int(entry["bytes"]):
                        entries[(split, index)] = entry
                except (KeyError, TypeError, ValueError):
                    continue
        return entries

    def write_shard(
        self, rank: int, shard: Shard, features: np.ndarray, skipped: list, stamp: str
    ) -> dict:
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
            "stamp": stamp,
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


def _parse(line: str) -> tuple[str, int, dict] | None:
    try:
        entry = json.loads(line)
        return str(entry["split"]), int(entry["shard"]), entry
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
